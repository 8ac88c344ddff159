"""One comparison page for every model trained on a task: a Markdown file and a self-contained HTML page.

A run folder holds ``report.json`` (written by the training/evaluation code) and, for models trained by
gradient descent, ``metrics.jsonl``. Classification ``report.json`` keys: task, dataset, name, kind,
description, parameters, trainable_parameters, train_seconds, latency_ms_per_example, test (the dict
returned by ``scratchlm.tasks.metrics.classification_metrics``) and optionally val, test_split, command.

Translation and summarization runs (task ``translate`` / ``summarize``, written by
``scratchlm.stages.seq2seq``) carry direction, test_examples and test = {"greedy": {...}, "beam": {...}}, each
mode holding num_beams, sentences_per_s, seconds and ``bleu``/``chrf`` (translate) or ``rouge``
(summarize) scores; the lead baseline has only "greedy". Their folders also hold ``predictions_test.jsonl``,
from which the page shows a few examples. The page's task is that of its runs: one page never mixes
classification, translation and summarization.

    runs = collect_runs(["runs/imdb"])          # a run folder, or a folder of run folders
    write_report(runs, "runs/imdb/comparison")  # report.md, report.html, loss_curves.png, confusion_*.png

or ``python -m scratchlm.stages.report runs/imdb -o runs/imdb/comparison``.

The HTML page embeds its pictures as base64 data URIs and carries its CSS inline (no JavaScript, nothing
fetched), so it can be mailed or archived as one file; the Markdown file links the PNGs next to it.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..train.metrics_log import read_metrics

REPORT_FILE = "report.json"
METRICS_FILE = "metrics.jsonl"
PREDICTIONS_FILE = "predictions_test.jsonl"
DASH = "—"
SEQ2SEQ_TASKS = ("translate", "summarize")
MODES = ("greedy", "beam")  # decoding modes of a seq2seq run's "test", in column order
SEQ2SEQ_METRIC = {"translate": "bleu", "summarize": "rouge"}  # the score a seq2seq run must carry
N_EXAMPLES = 3  # example predictions shown per seq2seq run
EXAMPLE_CHARS = 200  # each example text is cut to this many characters


# ---------------------------------------------------------------------------------------------------
# collecting runs
# ---------------------------------------------------------------------------------------------------
def _load_run(run_dir: Path) -> dict:
    path = run_dir / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(report, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(report).__name__}")
    missing = [k for k in ("name", "test") if k not in report]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {', '.join(missing)}")
    test, task = report["test"], report.get("task")
    if task in SEQ2SEQ_TASKS:
        metric = SEQ2SEQ_METRIC[task]
        if not isinstance(test, dict) or not any(
                isinstance(test.get(m), dict) and isinstance(test[m].get(metric), dict) for m in MODES):
            raise ValueError(f"{path}: 'test' of a {task} run must hold 'greedy' and/or 'beam' scores, "
                             f"each with a '{metric}' dict")
    elif not isinstance(test, dict) or not isinstance(test.get("accuracy"), (int, float)):
        raise ValueError(f"{path}: 'test' must be a classification_metrics dict with a numeric 'accuracy'")
    run = dict(report)
    run["name"] = str(run["name"])
    run["run_dir"] = str(run_dir)
    return run


def collect_runs(paths: str | Path | Iterable[str | Path], *, allow_mixed: bool = False) -> list[dict]:
    """Load every run under ``paths``: each a run folder (holding report.json), a folder whose direct
    subfolders are run folders, or a report.json file. Subfolders without report.json are skipped.

    Returns the report.json dicts, each with ``run_dir`` added, in the order found (a folder's subfolders
    sorted by name); a run reached twice is kept once. Raises FileNotFoundError when a path does not exist
    or nothing is found, and ValueError when the runs are on different tasks, datasets, translation
    directions or test splits (their numbers are not comparable) unless ``allow_mixed``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise FileNotFoundError("collect_runs: no paths given")
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if p.is_file():
            if p.name != REPORT_FILE:
                raise ValueError(f"{p} is a file but not a {REPORT_FILE}; pass a run folder or a folder of runs")
            found.append(p.parent)
        elif (p / REPORT_FILE).is_file():
            found.append(p)
        else:
            found.extend(sorted(d for d in p.iterdir() if d.is_dir() and (d / REPORT_FILE).is_file()))
    seen: set[Path] = set()
    runs = []
    for d in found:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            runs.append(_load_run(d))
    if not runs:
        raise FileNotFoundError(f"no run folders (with a {REPORT_FILE}) found in or under "
                                f"{', '.join(str(p) for p in paths)}")
    if not allow_mixed:
        _check_comparable(runs)
    return runs


def _check_comparable(runs: list[dict]) -> None:
    for key in ("task", "dataset", "direction", "test_split"):
        groups: dict[str, list[str]] = {}
        for r in runs:
            if key in ("direction", "test_split") and r.get(key) is None:
                continue  # optional: only a conflict when two runs name different ones
            groups.setdefault(str(r.get(key)), []).append(f"{r['name']} ({r['run_dir']})")
        if len(groups) > 1:
            detail = "; ".join(f"{key}={value}: {', '.join(names)}" for value, names in groups.items())
            raise ValueError(f"the runs are on different {key}s, so their numbers are not comparable: {detail} "
                             "(pass allow_mixed=True / --allow-mixed to compare them anyway)")


# ---------------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------------
def _num(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return None if math.isnan(x) else x


def fmt_pct(x) -> str:
    """0.91234 -> '91.23%'."""
    x = _num(x)
    return DASH if x is None else f"{100 * x:.2f}%"


def fmt_count(n) -> str:
    """Parameter counts: 950 -> '950', 123_456 -> '123.5K', 6_512_000 -> '6.5M', 1.2e9 -> '1.2B'."""
    n = _num(n)
    if n is None:
        return DASH
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div * 0.9995:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def fmt_duration(seconds) -> str:
    """3.24 -> '3.2s', 42 -> '42s', 252 -> '4m 12s', 7500 -> '2h 05m'."""
    s = _num(seconds)
    if s is None or s < 0:
        return DASH
    if s < 10:
        return f"{s:.1f}s"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def fmt_ms(x) -> str:
    """Latency in ms with three significant digits: 0.0123 -> '0.0123', 1.234 -> '1.23', 123.4 -> '123'."""
    x = _num(x)
    if x is None:
        return DASH
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_ratio(x) -> str:
    x = _num(x)
    if x is None:
        return DASH
    if x >= 10:
        return f"{x:.0f}×"
    return f"{x:.3f}×" if x == 0 or x >= 0.01 else f"{x:.2g}×"


def _ratio(a, b) -> float | None:
    a, b = _num(a), _num(b)
    return None if a is None or b is None or b == 0 else a / b


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


def _md(text) -> str:
    """Text for a Markdown table cell: HTML special characters and pipes escaped, one line."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _h(text) -> str:
    return html.escape(str(text), quote=True)


_MD_PUNCT = re.compile(r"([\\`*_\[\]|~])")


def _md_text(text) -> str:
    """Arbitrary text (a source, reference or model output) for a Markdown table cell, shown literally: one
    line, HTML special characters escaped and the Markdown punctuation that would format it backslash-escaped."""
    return html.escape(_MD_PUNCT.sub(r"\\\1", " ".join(str(text).split())), quote=False)


def _md_code_span(text) -> str:
    """Inline code (a sacrebleu signature, which holds pipes): a fence longer than any backtick run in it."""
    text = " ".join(str(text).split())
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _clip(text, limit: int = EXAMPLE_CHARS) -> str:
    """One line of at most ``limit`` characters; longer text is cut and ends in an ellipsis."""
    if text is None:
        return DASH
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------------
COLUMNS = ["#", "model", "kind", "test accuracy", "macro F1", "macro precision", "macro recall", "ROC-AUC",
           "parameters", "trainable", "train time", "latency ms/example", "accuracy vs best"]
NUMERIC = set(COLUMNS) - {"model", "kind"}


def _sorted(runs: Sequence[dict]) -> list[dict]:
    def key(r):
        t = r["test"]
        return (-(_num(t.get("accuracy")) or 0.0), -(_num(t.get("f1_macro")) or 0.0), r["name"])
    return sorted(runs, key=key)


def _results_rows(runs: list[dict]) -> list[list[str]]:
    best = runs[0]["test"].get("accuracy")
    rows = []
    for i, r in enumerate(runs, 1):
        t = r["test"]
        rows.append([str(i), r["name"], str(r.get("kind", DASH)), fmt_pct(t.get("accuracy")),
                     fmt_pct(t.get("f1_macro")), fmt_pct(t.get("precision_macro")), fmt_pct(t.get("recall_macro")),
                     fmt_pct(t.get("roc_auc")), fmt_count(r.get("parameters")),
                     fmt_count(r.get("trainable_parameters")), fmt_duration(r.get("train_seconds")),
                     fmt_ms(r.get("latency_ms_per_example")), fmt_ratio(_ratio(t.get("accuracy"), best))])
    return rows


RELATIVE_COLUMNS = ["model", "accuracy vs best", "Δ accuracy", "parameters ×", "trainable ×", "train time ×",
                    "latency ×"]


def _relative_rows(runs: list[dict]) -> list[list[str]]:
    b = runs[0]
    rows = []
    for r in runs:
        d_acc = _num(r["test"].get("accuracy")), _num(b["test"].get("accuracy"))
        delta = DASH if None in d_acc else f"{100 * (d_acc[0] - d_acc[1]):+.2f} pts"
        rows.append([r["name"], fmt_ratio(_ratio(r["test"].get("accuracy"), b["test"].get("accuracy"))), delta,
                     *(fmt_ratio(_ratio(r.get(k), b.get(k)))
                       for k in ("parameters", "trainable_parameters", "train_seconds", "latency_ms_per_example"))])
    return rows


def _class_names(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for r in runs:
        for n in r["test"].get("label_names") or []:
            if str(n) not in names:
                names.append(str(n))
    return names


def _per_class_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows = classes, columns = runs: the test F1 of each class (and the class's test support)."""
    names = _class_names(runs)
    header = ["class", "support", *(r["name"] for r in runs)]
    rows = []
    for c in names:
        support = DASH
        cells = []
        for r in runs:
            entry = (r["test"].get("report") or {}).get(c)
            if isinstance(entry, dict):
                cells.append(fmt_pct(entry.get("f1-score")))
                if support == DASH and _num(entry.get("support")) is not None:
                    support = f"{int(entry['support'])}"
            else:
                cells.append(DASH)
        rows.append([c, support, *cells])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]], numeric: set[str] | None = None, cell=_md) -> str:
    """``cell`` escapes each body cell (``_md_text`` for arbitrary text such as model outputs)."""
    numeric = numeric or set()
    out = ["| " + " | ".join(_md(h) for h in header) + " |",
           "|" + "|".join("---:" if h in numeric else "---" for h in header) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _html_table(header: list[str], rows: list[list[str]], numeric: set[str] | None = None,
                highlight_first: bool = False, wrap: bool = False) -> str:
    """``wrap``: long text cells wrap (class "text") instead of staying on one line."""
    numeric = numeric or set()
    cls = ["num" if h in numeric else ("text" if wrap else "") for h in header]
    out = ["<table>", "<thead><tr>" + "".join(f'<th class="{c}">{_h(h)}</th>' for h, c in zip(header, cls))
           + "</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        attr = ' class="best"' if highlight_first and i == 0 else ""
        out.append(f"<tr{attr}>" + "".join(f'<td class="{c}">{_h(v)}</td>' for v, c in zip(row, cls)) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------------
def _matplotlib_available() -> bool:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return False
    return True


def plot_run_curves(run_dir: str | Path, name: str, path: Path, until_step: int | None = None) -> Path | None:
    """One run's training and validation loss against step as a PNG (for a model card), up to ``until_step``
    (the checkpoint published); None without matplotlib or without a metrics.jsonl."""
    if not _matplotlib_available():
        return None
    return _plot_loss_curves([{"name": name, "run_dir": str(run_dir), "until_step": until_step}], path)


def _history(run: dict) -> tuple[list[dict], list[dict]] | None:
    """(train rows, eval rows) from the run's metrics.jsonl; None without one. A torn last line (a run
    still writing) is skipped."""
    if run.get("run_dir") is None:
        return None
    path = Path(run["run_dir"]) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        rows = read_metrics(path)
    except json.JSONDecodeError:
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    rows = [r for r in rows if isinstance(r, dict) and _num(r.get("step")) is not None]
    if run.get("until_step") is not None:
        rows = [r for r in rows if r["step"] <= run["until_step"]]
    # a resumed run logs again the steps after its checkpoint that the stopped part had logged: the later wins
    rows = list({(r.get("kind"), r["step"]): r for r in rows}.values())
    return [r for r in rows if r.get("kind") == "train"], [r for r in rows if r.get("kind") == "eval"]


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["step"]), float(r[key])) for r in rows if _num(r.get(key)) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot_loss_curves(runs: list[dict], path: Path) -> Path | None:
    """Training loss (solid) and validation loss (dashed) against step, one colour per run; a second panel
    with validation accuracy when the runs log it. None when no run has a metrics.jsonl with losses."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = []
    for r in runs:
        hist = _history(r)
        if hist is None:
            continue
        train, evals = hist
        tr, va, acc = _series(train, "loss"), _series(evals, "val_loss"), _series(evals, "val_accuracy")
        if tr[0] or va[0]:
            curves.append((_mpl(r["name"]), tr, va, acc))
    if not curves:
        return None
    with_acc = any(c[3][0] for c in curves)
    fig = Figure(figsize=(12 if with_acc else 8, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if with_acc else 1, 1)
    ax_acc = fig.add_subplot(1, 2, 2) if with_acc else None
    for i, (name, tr, va, acc) in enumerate(curves):
        color = f"C{i % 10}"
        if tr[0]:
            ax.plot(tr[0], tr[1], color=color, linewidth=1.2, label=f"{name} train")
        if va[0]:
            ax.plot(va[0], va[1], color=color, linewidth=1.5, linestyle="--", marker="o" if len(va[0]) < 30 else None,
                    markersize=3, label=f"{name} val")
        if ax_acc is not None and acc[0]:
            ax_acc.plot(acc[0], [100 * a for a in acc[1]], color=color, linestyle="--", marker="o", markersize=3,
                        label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss (solid) and validation loss (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if ax_acc is not None:
        ax_acc.set_xlabel("step")
        ax_acc.set_ylabel("validation accuracy (%)")
        ax_acc.set_title("validation accuracy")
        ax_acc.grid(alpha=0.3)
        ax_acc.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def _mpl(text) -> str:
    """Text for a matplotlib label: a '$' would start mathtext (and a bad formula fails the whole plot)."""
    return str(text).replace("$", r"\$")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------------
CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #eaeef2; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { white-space: normal; min-width: 12em; max-width: 30em; vertical-align: top; }
p code { background: #f6f8fa; padding: .1em .3em; border-radius: 3px; font-size: .85em; word-break: break-all; }
tr.best td { background: #eaf7ea; font-weight: 600; }
.meta, .note { color: #57606a; font-size: .9em; }
.note { background: #fff8c5; border: 1px solid #d4a72c66; padding: .5em .8em; border-radius: 4px; }
pre { background: #f6f8fa; padding: .6em .8em; overflow-x: auto; white-space: pre-wrap; word-break: break-all;
      border-radius: 4px; font-size: .85em; }
img { max-width: 100%; height: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { margin: 0; max-width: 420px; }
figcaption { font-size: .9em; color: #57606a; text-align: center; }
"""


def _md_code(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text}\n{fence}"


def _common(runs: list[dict], key: str) -> str | None:
    values = {str(r[key]) for r in runs if r.get(key) is not None}
    return values.pop() if len(values) == 1 else (", ".join(sorted(values)) if values else None)


def _page_task(run: dict) -> str:
    """"translate" or "summarize" for seq2seq runs; "classify" for everything else (the original page)."""
    task = run.get("task")
    return task if task in SEQ2SEQ_TASKS else "classify"


def _notes(runs: list[dict], sizes: list, shown_sizes: list, have_mpl: bool, loss_png: Path | None,
           pictures: str, why_no_losses: str) -> list[str]:
    """The notes at the top of a page: test sets of different sizes, pictures missing and why."""
    notes = []
    if len(set(sizes)) > 1:
        notes.append("The runs were scored on test sets of different sizes (" +
                     ", ".join(f"{r['name']}: {n}" for r, n in zip(runs, shown_sizes)) + "); compare with care.")
    if not have_mpl:
        notes.append(f"matplotlib is not installed, so this page has no {pictures}; pip install matplotlib and "
                     f"rebuild it to get them.")
    elif loss_png is None:
        notes.append(f"No run has a metrics.jsonl with losses ({why_no_losses}), so there are no loss curves.")
    return notes


def _meta(fields: list[tuple[str, str | None]], sizes: list) -> str:
    """The page's one-line description: the fields that are set, and the test set size when the runs share it."""
    bits = [f"{name}: {value}" for name, value in fields if value]
    if len(set(sizes)) == 1 and sizes[0] is not None:
        bits.append(f"test examples: {sizes[0]}")
    return " · ".join(bits)


def _md_head(title: str, meta: str, legend: str, notes: list[str]) -> list[str]:
    return [f"# {_md(title)}", "", meta, "", legend, "", *(f"> **Note:** {_md(n)}" for n in notes)]


def _html_head(title: str, meta: str, legend: str, notes: list[str]) -> list[str]:
    return ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_h(title)}</title>",
            f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{_h(title)}</h1>", f'<p class="meta">{_h(meta)}</p>',
            f'<p class="meta">{_h(legend)}</p>',
            *(f'<p class="note"><strong>Note:</strong> {_h(n)}</p>' for n in notes)]


def _md_runs(runs: list[dict], details) -> list[str]:
    """The "Runs" section: each run's details (``details(run)``: lines) and command."""
    md = ["## Runs", ""]
    for r in runs:
        md += [f"### {_md(r['name'])}", "", *(f"- {_md(line)}" for line in details(r))]
        if r.get("command"):
            md += ["", _md_code(str(r["command"]))]
        md.append("")
    return md


def _html_runs(runs: list[dict], details) -> list[str]:
    h = ["<h2>Runs</h2>"]
    for r in runs:
        h += [f"<h3>{_h(r['name'])}</h3>", "<ul>", *(f"<li>{_h(line)}</li>" for line in details(r)), "</ul>"]
        if r.get("command"):
            h.append(f"<pre><code>{_h(r['command'])}</code></pre>")
    return [*h, "</body>", "</html>", ""]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_report(runs: Sequence[dict], out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``loss_curves.png`` (runs with a metrics.jsonl) into
    ``out_dir``; for classification runs also one ``confusion_<name>.png`` per run. Returns {"markdown",
    "html", "loss_curves", "confusion_<name>", ...} -> path (pictures only when matplotlib is installed).

    The page's kind follows its runs' task: classification, translation (BLEU/chrF, greedy and beam) or
    summarization (ROUGE, greedy and beam). Runs of different kinds cannot share a page (ValueError), even
    when collected with ``allow_mixed``."""
    if not runs:
        raise ValueError("write_report: no runs to report on")
    for r in runs:
        if not isinstance(r, dict) or "name" not in r or not isinstance(r.get("test"), dict):
            raise ValueError("write_report: every run must be a dict with 'name' and 'test' (see collect_runs)")
    kinds: dict[str, list[str]] = {}
    for r in runs:
        kinds.setdefault(_page_task(r), []).append(str(r["name"]))
    if len(kinds) > 1:
        detail = "; ".join(f"{k}: {', '.join(names)}" for k, names in kinds.items())
        raise ValueError(f"write_report: classification, translation and summarization runs cannot share one page "
                         f"({detail}); report each task separately")
    task = next(iter(kinds))
    if task in SEQ2SEQ_TASKS:
        return _write_seq2seq(list(runs), Path(out_dir), title, task)
    return _write_classification(runs, out_dir, title)


def _write_classification(runs: Sequence[dict], out_dir: str | Path, title: str | None) -> dict[str, Path]:
    runs = _sorted(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task, dataset, split = _common(runs, "task"), _common(runs, "dataset"), _common(runs, "test_split")
    title = title or f"{dataset or 'dataset'} {task or 'classify'}: {len(runs)} model{'s' * (len(runs) != 1)} compared"
    written: dict[str, Path] = {}

    # pictures
    have_mpl = _matplotlib_available()
    loss_png: Path | None = None
    confusion: dict[int, Path] = {}
    if have_mpl:
        from ..tasks.metrics import plot_confusion_matrix

        loss_png = _plot_loss_curves(runs, out_dir / "loss_curves.png")
        if loss_png is not None:
            written["loss_curves"] = loss_png
        used: set[str] = set()
        for i, r in enumerate(runs):
            cm, names = r["test"].get("confusion_matrix"), r["test"].get("label_names")
            if not cm or not names:
                continue
            slug, k = _slug(r["name"]), 2
            while slug in used:
                slug, k = f"{_slug(r['name'])}_{k}", k + 1
            used.add(slug)
            path = plot_confusion_matrix(cm, [_mpl(n) for n in names], out_dir / f"confusion_{slug}.png",
                                         title=f"{_mpl(r['name'])}: accuracy {fmt_pct(r['test'].get('accuracy'))}")
            confusion[i] = path
            written[f"confusion_{slug}"] = path

    sizes = [r["test"].get("n") for r in runs]
    notes = _notes(runs, sizes, sizes, have_mpl, loss_png, "pictures (loss curves, confusion matrices)",
                   "classical baselines log none")
    meta = _meta([("task", task or DASH), ("dataset", dataset or DASH), ("test split", split)], sizes)
    legend = ("Sorted by test accuracy. Scores in %; macro = unweighted mean over classes. Latency: batch "
              "inference over the test set, milliseconds per example. \"accuracy vs best\" = test accuracy / "
              f"the best model's ({runs[0]['name']}).")
    results = _results_rows(runs)
    relative = _relative_rows(runs)
    pc_header, pc_rows = _per_class_rows(runs)
    pc_numeric = set(pc_header) - {"class"}

    # Markdown
    md = _md_head(title, meta, legend, notes)
    md += ["", "## Results", "", _md_table(COLUMNS, results, NUMERIC), "",
           f"## Relative to the best model ({_md(runs[0]['name'])})", "",
           _md_table(RELATIVE_COLUMNS, relative, set(RELATIVE_COLUMNS) - {"model"}), ""]
    if loss_png is not None:
        md += ["## Training curves", "", f"![loss curves]({loss_png.name})", ""]
    md += ["## Per-class F1 (test)", "", _md_table(pc_header, pc_rows, pc_numeric), ""]
    if confusion:
        md += ["## Confusion matrices (test; rows = true class, columns = predicted)", ""]
        md += [f"![confusion matrix of {_md(runs[i]['name'])}]({p.name})" for i, p in confusion.items()]
        md += [""]
    md += _md_runs(runs, _run_details)
    written["markdown"] = _write_lines(out_dir / "report.md", md)

    # HTML
    h = _html_head(title, meta, legend, notes)
    h += ["<h2>Results</h2>", _html_table(COLUMNS, results, NUMERIC, highlight_first=True),
          f"<h2>Relative to the best model ({_h(runs[0]['name'])})</h2>",
          _html_table(RELATIVE_COLUMNS, relative, set(RELATIVE_COLUMNS) - {"model"}, highlight_first=True)]
    if loss_png is not None:
        h += ["<h2>Training curves</h2>", f'<img src="{_data_uri(loss_png)}" alt="loss curves">']
    h += ["<h2>Per-class F1 (test)</h2>", _html_table(pc_header, pc_rows, pc_numeric)]
    if confusion:
        h += ["<h2>Confusion matrices (test; rows = true class, columns = predicted)</h2>", '<div class="grid">']
        for i, p in confusion.items():
            name = _h(runs[i]["name"])
            h.append(f'<figure><img src="{_data_uri(p)}" alt="confusion matrix of {name}">'
                     f"<figcaption>{name}</figcaption></figure>")
        h.append("</div>")
    h += _html_runs(runs, _run_details)
    written["html"] = _write_lines(out_dir / "report.html", h)
    return written


def _run_details(r: dict) -> list[str]:
    lines = []
    if r.get("description"):
        lines.append(str(r["description"]))
    lines.append(f"kind: {r.get('kind', DASH)} · parameters: {fmt_count(r.get('parameters'))} "
                 f"({fmt_count(r.get('trainable_parameters'))} trainable) · "
                 f"training time: {fmt_duration(r.get('train_seconds'))} · "
                 f"latency: {fmt_ms(r.get('latency_ms_per_example'))} ms/example")
    t = r["test"]
    test = f"test{' (' + str(r['test_split']) + ')' if r.get('test_split') else ''}"
    lines.append(f"{test}: accuracy {fmt_pct(t.get('accuracy'))}, macro F1 {fmt_pct(t.get('f1_macro'))} "
                 f"on {t.get('n', DASH)} examples")
    v = r.get("val")
    if isinstance(v, dict):
        lines.append(f"validation: accuracy {fmt_pct(v.get('accuracy'))}, macro F1 {fmt_pct(v.get('f1_macro'))} "
                     f"on {v.get('n', DASH)} examples")
    if r.get("run_dir"):
        lines.append(f"run folder: {r['run_dir']}")
    if not r.get("command"):
        lines.append("command: not recorded")
    return lines


# ---------------------------------------------------------------------------------------------------
# translation and summarization pages
# ---------------------------------------------------------------------------------------------------
ROUGE_KEYS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"))
_RUN_COLUMNS = ["parameters", "trainable", "train time", "sentences/s greedy", "sentences/s beam"]
TRANSLATE_COLUMNS = ["#", "model", "kind", "BLEU greedy", "BLEU beam", "chrF greedy", "chrF beam", *_RUN_COLUMNS]
SUMMARIZE_COLUMNS = ["#", "model", "kind", *(f"{label} {m}" for m in MODES for _, label in ROUGE_KEYS),
                     *_RUN_COLUMNS]
# (metric, key) pairs a seq2seq page is sorted by, best first: the first decides, the second breaks ties
SEQ2SEQ_SORT = {"translate": (("bleu", "score"), ("chrf", "score")),
                "summarize": (("rouge", "rougeL"), ("rouge", "rouge1"))}


def fmt_score(x) -> str:
    """A BLEU / chrF / ROUGE score, already on a 0-100 scale: 23.456 -> '23.46'."""
    x = _num(x)
    return DASH if x is None else f"{x:.2f}"


def fmt_rate(x) -> str:
    """Sentences per second, three significant digits: 0.512 -> '0.512', 41.26 -> '41.3', 1234.5 -> '1234'."""
    return fmt_ms(x)


def _mode(run: dict, mode: str) -> dict:
    m = run["test"].get(mode)
    return m if isinstance(m, dict) else {}


def _score(run: dict, mode: str, metric: str, key: str = "score") -> float | None:
    d = _mode(run, mode).get(metric)
    return _num(d.get(key)) if isinstance(d, dict) else None


def _headline(run: dict, metric: str, key: str = "score") -> float | None:
    """The beam-search score, or the greedy one when the run has no beam decode (the lead baseline)."""
    beam = _score(run, "beam", metric, key)
    return beam if beam is not None else _score(run, "greedy", metric, key)


def _seq2seq_sorted(runs: Sequence[dict], task: str) -> list[dict]:
    def key(r):
        values = (_headline(r, metric, k) for metric, k in SEQ2SEQ_SORT[task])
        return (*(-v if v is not None else math.inf for v in values), r["name"])
    return sorted(runs, key=key)


def _seq2seq_rows(runs: list[dict], task: str) -> list[list[str]]:
    rows = []
    for i, r in enumerate(runs, 1):
        if task == "translate":
            scores = [fmt_score(_score(r, m, metric)) for metric in ("bleu", "chrf") for m in MODES]
        else:
            scores = [fmt_score(_score(r, m, "rouge", k)) for m in MODES for k, _ in ROUGE_KEYS]
        rows.append([str(i), r["name"], str(r.get("kind", DASH)), *scores, fmt_count(r.get("parameters")),
                     fmt_count(r.get("trainable_parameters")), fmt_duration(r.get("train_seconds")),
                     *(fmt_rate(_mode(r, m).get("sentences_per_s")) for m in MODES)])
    return rows


def _scoring_settings(runs: list[dict], task: str) -> list[tuple[str, str, list[str] | None]]:
    """How the scores were computed, each distinct setting once: (label, value, the runs using it, or None
    when every run that records one agrees). Translate: the sacrebleu BLEU and chrF signatures; summarize:
    the ROUGE tokenizer."""
    specs = ([("BLEU signature", "bleu", "signature"), ("chrF signature", "chrf", "signature")]
             if task == "translate" else [("ROUGE tokenizer", "rouge", "tokenizer")])
    out = []
    for label, metric, key in specs:
        found: dict[str, list[str]] = {}
        for r in runs:
            for m in MODES:
                d = _mode(r, m).get(metric)
                if isinstance(d, dict) and d.get(key):
                    names = found.setdefault(str(d[key]), [])
                    if r["name"] not in names:
                        names.append(r["name"])
        out += [(label, value, names if len(found) > 1 else None) for value, names in found.items()]
    return out


def _examples(run: dict, limit: int = N_EXAMPLES) -> tuple[str, list[list[str]]] | None:
    """The first ``limit`` rows of the run's predictions_test.jsonl as [source, first reference, prediction],
    each cut to EXAMPLE_CHARS, and the decoding mode shown (beam when the rows have it, else greedy). None
    when the run folder has no predictions file; unreadable lines are skipped."""
    if run.get("run_dir") is None:
        return None
    path = Path(run["run_dir"]) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    rows: list[list[str]] = []
    shown = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if len(rows) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            mode = shown or next((m for m in (*reversed(MODES), "prediction") if isinstance(row.get(m), str)), "")
            shown = shown or mode
            refs = row.get("references")
            ref = (refs[0] if refs else None) if isinstance(refs, list) else refs
            rows.append([_clip(row.get("source")), _clip(ref), _clip(row.get(mode) if mode else None)])
    return shown or "greedy", rows


def _beam_widths(runs: list[dict]) -> list[int]:
    return sorted({int(n) for r in runs if (n := _num(_mode(r, "beam").get("num_beams"))) is not None})


def _mode_summary(d: dict, task: str) -> str:
    if task == "translate":
        bleu, chrf = d.get("bleu"), d.get("chrf")
        return (f"BLEU {fmt_score(bleu.get('score') if isinstance(bleu, dict) else None)}, "
                f"chrF {fmt_score(chrf.get('score') if isinstance(chrf, dict) else None)}")
    rouge = d.get("rouge") if isinstance(d.get("rouge"), dict) else {}
    return "ROUGE-1/2/L " + "/".join(fmt_score(rouge.get(k)) for k, _ in ROUGE_KEYS)


def _seq2seq_details(r: dict, task: str) -> list[str]:
    lines = []
    if r.get("description"):
        lines.append(str(r["description"]))
    head = f"kind: {r.get('kind', DASH)}" + (f" · direction: {r['direction']}" if r.get("direction") else "")
    lines.append(f"{head} · parameters: {fmt_count(r.get('parameters'))} "
                 f"({fmt_count(r.get('trainable_parameters'))} trainable) · "
                 f"training time: {fmt_duration(r.get('train_seconds'))}")
    if _num(r.get("steps")) is not None:
        bits = [f"{int(r['steps']):,} steps"]
        if _num(r.get("best_step")) is not None:
            bits.append(f"best checkpoint at step {int(r['best_step']):,}")
        if r.get("stopped_because"):
            bits.append(f"stopped: {r['stopped_because']}")
        lines.append("training: " + ", ".join(bits))
    test = f"test{' (' + str(r['test_split']) + ')' if r.get('test_split') else ''}"
    n = _num(r.get("test_examples"))
    for m in MODES:
        d = _mode(r, m)
        if not d:
            continue
        nb = _num(d.get("num_beams"))
        beams = DASH if nb is None else f"{int(nb)} beam{'s' * (int(nb) != 1)}"
        lines.append(f"{test}, {m} ({beams}): {_mode_summary(d, task)} on {DASH if n is None else f'{int(n):,}'} "
                     f"examples · {fmt_rate(d.get('sentences_per_s'))} sentences/s · "
                     f"decoding {fmt_duration(d.get('seconds'))}")
    if r.get("run_dir"):
        lines.append(f"run folder: {r['run_dir']}")
    if not r.get("command"):
        lines.append("command: not recorded")
    return lines


def _write_seq2seq(runs: list[dict], out_dir: Path, title: str | None, task: str) -> dict[str, Path]:
    runs = _seq2seq_sorted(runs, task)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, direction, split = _common(runs, "dataset"), _common(runs, "direction"), _common(runs, "test_split")
    title = title or (f"{dataset or 'dataset'} {task}{' ' + direction if direction else ''}: "
                      f"{len(runs)} model{'s' * (len(runs) != 1)} compared")
    written: dict[str, Path] = {}

    have_mpl = _matplotlib_available()
    loss_png = _plot_loss_curves(runs, out_dir / "loss_curves.png") if have_mpl else None
    if loss_png is not None:
        written["loss_curves"] = loss_png

    sizes = [r.get("test_examples") for r in runs]
    notes = _notes(runs, sizes, [r.get("test_examples", DASH) for r in runs], have_mpl, loss_png, "loss curves",
                   "the lead baseline logs none")
    meta = _meta([("task", task), ("dataset", dataset or DASH), ("direction", direction), ("test split", split)],
                 sizes)
    widths = _beam_widths(runs)
    beam = (f"beam search with {widths[0]} beams" if len(widths) == 1
            else "beam search (widths differ: see each run below)" if widths else "beam search")
    if task == "translate":
        columns = TRANSLATE_COLUMNS
        legend = ("Sorted by test BLEU with beam search (greedy BLEU for a run without a beam decode). BLEU and "
                  "chrF: corpus-level sacrebleu scores (0–100) against the test references; greedy = 1 beam, "
                  f"beam = {beam}. sentences/s: decoding throughput over the test set in each mode.")
    else:
        columns = SUMMARIZE_COLUMNS
        legend = ("Sorted by test ROUGE-L with beam search (greedy ROUGE-L for a run without a beam decode, such "
                  "as the lead baseline). ROUGE-1/2/L: mean F1 × 100 over the test examples; greedy = 1 beam, "
                  f"beam = {beam}. sentences/s: decoding throughput over the test set in each mode.")
    numeric = set(columns) - {"model", "kind"}
    results = _seq2seq_rows(runs, task)
    settings = _scoring_settings(runs, task)
    examples = [(r, _examples(r)) for r in runs]
    ex_title = f"Example predictions (the first {N_EXAMPLES} test examples, cut to {EXAMPLE_CHARS} characters)"

    def no_examples(ex) -> str:
        return f"No {PREDICTIONS_FILE} in the run folder." if ex is None else f"No readable rows in {PREDICTIONS_FILE}."

    # Markdown
    md = _md_head(title, meta, legend, notes)
    md += ["", "## Results", "", _md_table(columns, results, numeric), ""]
    for label, value, names in settings:
        md += [f"{_md(label)}: {_md_code_span(value)}" + (f" ({_md(', '.join(names))})" if names else ""), ""]
    if loss_png is not None:
        md += ["## Training curves", "", f"![loss curves]({loss_png.name})", ""]
    md += [f"## {ex_title}", ""]
    for r, ex in examples:
        md += [f"### {_md(r['name'])}", ""]
        if ex and ex[1]:
            md += [_md_table(["source", "reference", f"prediction ({ex[0]})"], ex[1], cell=_md_text), ""]
        else:
            md += [_md(no_examples(ex)), ""]
    md += _md_runs(runs, lambda r: _seq2seq_details(r, task))
    written["markdown"] = _write_lines(out_dir / "report.md", md)

    # HTML
    h = _html_head(title, meta, legend, notes)
    h += ["<h2>Results</h2>", _html_table(columns, results, numeric, highlight_first=True)]
    h += [f'<p class="meta">{_h(label)}: <code>{_h(value)}</code>'
          + (f" ({_h(', '.join(names))})" if names else "") + "</p>" for label, value, names in settings]
    if loss_png is not None:
        h += ["<h2>Training curves</h2>", f'<img src="{_data_uri(loss_png)}" alt="loss curves">']
    h.append(f"<h2>{_h(ex_title)}</h2>")
    for r, ex in examples:
        h.append(f"<h3>{_h(r['name'])}</h3>")
        if ex and ex[1]:
            h.append(_html_table(["source", "reference", f"prediction ({ex[0]})"], ex[1], wrap=True))
        else:
            h.append(f'<p class="meta">{_h(no_examples(ex))}</p>')
    h += _html_runs(runs, lambda r: _seq2seq_details(r, task))
    written["html"] = _write_lines(out_dir / "report.html", h)
    return written


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scratchlm.stages.report",
                                 description="Compare every model trained on a task on one page.")
    ap.add_argument("paths", nargs="+", help="run folders, or folders whose subfolders are run folders")
    ap.add_argument("-o", "--out", help="output folder (default: <first path>/comparison)")
    ap.add_argument("--title", help="page title")
    ap.add_argument("--allow-mixed", action="store_true",
                    help="allow runs on different tasks/datasets/directions/splits")
    args = ap.parse_args(argv)
    runs = collect_runs(args.paths, allow_mixed=args.allow_mixed)
    out = Path(args.out) if args.out else Path(args.paths[0]) / "comparison"
    written = write_report(runs, out, title=args.title)
    print(f"{len(runs)} runs -> {written['html']} and {written['markdown']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
