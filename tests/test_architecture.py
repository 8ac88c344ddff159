"""The package's shape: no import cycles (imports inside functions count), few modules on the top floor, and a
README file tree that names every folder and top-level module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scratchlm"
README = PACKAGE.parent / "README.md"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the scratchlm modules it imports anywhere in its file (top level, functions, branches).

    ``from package import name`` counts as importing ``package.name`` when that is a module, else
    ``package``; a submodule's import does not count as one of its parent packages."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {known(a.name) for a in node.names if a.name.split(".")[0] == "scratchlm"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "scratchlm":
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in modules else known(source))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "scratchlm.api" in graph["scratchlm"]  # scratchlm.load imports the API when it is called
    assert "scratchlm.stages.seq2seq" in graph["scratchlm.cli.predict"]  # inside cmd_evaluate


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_at_most_four_modules_on_the_top_floor():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 4, f"modules directly in scratchlm/: {loose}; put them in a folder"


def test_the_readme_tree_names_every_folder_and_top_level_module():
    text = README.read_text("utf-8")
    tree = text[text.index("## Layout"):]
    tree = tree[:tree.index("```", tree.index("```") + 3)]
    folders = sorted(p.name for p in PACKAGE.iterdir()
                     if p.is_dir() and ((p / "__init__.py").exists() or p.name == "configs"))
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    missing = [f"{f}/" for f in folders if f"{f}/" not in tree] + [m for m in loose if m not in tree]
    assert not missing, f"README.md's Layout does not show {missing}"


def test_the_readme_links_to_the_recipes_resolve():
    # `configs/` at the top is a link to the shipped recipes; it once pointed at itself (configs/configs ->
    # scratchlm/configs, resolved inside configs/), so README.md's link led to an empty folder
    import re

    root = PACKAGE.parent
    for target in re.findall(r"\]\(([^)#:]+)\)", README.read_text("utf-8")):
        assert (root / target).exists(), f"README.md links to {target}, which does not exist"
    assert sorted(p.name for p in (root / "configs").glob("*.yaml")) == \
        sorted(p.name for p in (PACKAGE / "configs").glob("*.yaml"))
