"""Typed configuration: dataclasses <- YAML recipe <- dotted CLI overrides.

Every section is a dataclass; a recipe is YAML whose keys mirror the fields (a path, or the name of a recipe
shipped in ``scratchlm/configs``); the command line overrides single fields with ``--train.lr 3e-4``,
``--train.lr=3e-4`` or ``train.lr=3e-4``. Unknown fields and values of the wrong type are rejected with the
dotted name of the field, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
CONFIG_DIR = Path(__file__).parent / "configs"  # the shipped recipes


class ConfigError(ValueError):
    """A config field that does not exist or has a value of the wrong type."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the annotated type ``tp``, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and hasattr(tp, "parse"):  # short form, e.g. "imdb:unsupervised"
            return tp.parse(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin in (list, tuple):
        if isinstance(value, str) and value.strip().startswith("["):  # a YAML/JSON list: "[]", "[a, b]"
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ConfigError(f"{where}: expected a list, got {value!r} ({e})") from e
        elif isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: expected a JSON mapping, got {value!r}") from e
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict, validating names and types."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (data or {}).items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(
                f"unknown config field '{where}'; valid fields of {cls.__name__}: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(value, hints[key], where)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict (JSON/YAML-safe) of a dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def parse_override(item: str) -> tuple[str, str]:
    """``a.b=c`` -> (``a.b``, ``c``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    return key.strip().lstrip("-"), value


def apply_overrides(data: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (validation happens in ``from_dict``)."""
    out = json.loads(json.dumps(data))
    for key, value in overrides:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"override '{key}': '{p}' is a value, not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}" + (f" (the base: of {_chain[-1]})" if _chain else ""))
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a recipe YAML file")
    key = path.resolve()
    if key in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(key):], key))
        raise ConfigError(f"{path}: `base:` makes a cycle ({cycle}); a recipe cannot extend itself")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save the recipe as UTF-8") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:  # recipes may extend another recipe: `base: other.yaml`
        parent = load_yaml((path.parent / base) if not Path(base).is_absolute() else base, (*_chain, key))
        data = deep_merge(parent, data)
    return data


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def find_recipe(path: str | Path | None) -> Path | None:
    """A recipe path, or the name of a recipe shipped in scratchlm/configs."""
    if path is None:
        return None
    p = Path(path)
    if p.exists():
        return p
    name = str(path)
    shipped = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.exists():
        return shipped
    raise ConfigError(f"recipe not found: {path} (shipped recipes: "
                      f"{', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))})")


def overrides_from_args(extra: list[str]) -> list[str]:
    """Command-line overrides (``--a.b v``, ``--a.b=v``, ``a.b=v``) as ``a.b=v`` items."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--") and "=" not in item:
            if i + 1 >= len(extra):
                raise ConfigError(f"override {item} needs a value")
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        elif "=" in item:
            out.append(item.lstrip("-"))
            i += 1
        else:
            raise ConfigError(f"unexpected argument {item!r}; overrides look like --section.field value")
    return out


def load_recipe(yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe as a plain dict: YAML <- ``defaults`` (what command-line flags set) <- ``key=value``
    overrides. Each stage turns it into its config dataclass (``from_dict`` checks names and types)."""
    data = load_yaml(yaml_path) if yaml_path else {}
    data.update(defaults or {})
    return apply_overrides(data, [parse_override(o) for o in overrides or []])
