"""Publish a trained model folder as ``models/<name>/``: the folder a user loads by name.

A published folder holds ``model.safetensors`` (fp32, or bf16 to halve it), ``config.json``,
``tokenizer.json``, a model card ``README.md`` and ``manifest.json`` with the sha256 of every other file,
which the loader verifies. Publishing never overwrites an existing folder unless asked, and writes through a
temporary sibling folder, so an interrupted publish leaves the old one intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model import checkpoint as ckpt
from ..tokenizer import Tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PublishError(ValueError):
    """A publish request that would lose something or produce a folder over its size limit."""


def _card(name: str, config: dict, files: dict[str, dict], sections: Sequence[tuple[str, str]]) -> str:
    model = config.get("model", {})
    lines = [f"# {name}", ""]
    if model:
        lines += ["| architecture | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in model.items()]
        lines.append("")
    for title, body in sections:
        lines += [f"## {title}", "", body.strip(), ""]
    lines += ["## Files", "", "| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| `{f}` | {info['bytes']:,} | `{info['sha256']}` |" for f, info in sorted(files.items())]
    lines += ["", "The loader checks these hashes (`manifest.json`) every time the model is loaded by name.", ""]
    return "\n".join(lines)


def publish(source: str | Path, name: str, models_root: str | Path, *, dtype: str = "fp32",
            sections: Sequence[tuple[str, str]] = (), extra_config: dict | None = None,
            max_bytes: int | None = None, overwrite: bool = False) -> Path:
    """Copy the model in ``source`` (a model or checkpoint folder) to ``models_root/name``.

    ``sections`` are (title, markdown) pairs for the model card (corpora, scores, commands, ...).
    ``extra_config`` is merged into config.json under ``published``. Raises PublishError if the weights
    exceed ``max_bytes`` or the target exists and ``overwrite`` is false."""
    if dtype not in DTYPES:
        raise PublishError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = ckpt.resolve(source)
    ckpt.verify(folder)
    target = Path(models_root) / name
    if target.exists() and not overwrite:
        raise PublishError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    config = ckpt.read_config(folder)
    tensors = ckpt.load_tensors(folder)
    tensors = {k: (t.to(DTYPES[dtype]) if t.is_floating_point() else t).contiguous() for k, t in tensors.items()}
    config["published"] = {"name": name, "dtype": dtype, **(extra_config or {})}
    tokenizer = Tokenizer.load(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        size = (tmp / "model.safetensors").stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise PublishError(f"{name}: model.safetensors is {size / 1e6:.1f} MB in {dtype}, over the "
                               f"{max_bytes / 1e6:.0f} MB limit (try dtype bf16 or a smaller model)")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
        tokenizer.save(tmp)
        files = {str(p.relative_to(tmp)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "README.md").write_text(_card(name, config, files, sections), "utf-8")
        files["README.md"] = {"sha256": _sha256(tmp / "README.md"),
                              "bytes": (tmp / "README.md").stat().st_size}
        ckpt.write_json_atomic(tmp / ckpt.MANIFEST, {"files": files})
        old = target.with_name(f".{name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
