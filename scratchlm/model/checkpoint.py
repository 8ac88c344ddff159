"""Checkpoints: one folder per save, written atomically, loaded without pickle.

A checkpoint folder holds ``config.json`` (the resolved recipe + model config), ``model.safetensors``,
``tokenizer.json``, and for training checkpoints ``optimizer.safetensors`` + ``trainer_state.json`` (step,
RNG states, data position, metrics). ``manifest.json`` is written last with the sha256 of every file: a
folder without it is incomplete, one whose files do not match it was truncated or edited.

Saving writes into a hidden temporary folder and renames it into place, then moves the ``LATEST``
pointer with ``os.replace``: a kill at any moment leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
LATEST = "LATEST"
BEST = "BEST"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupted or does not match the model/tokenizer."""


class CheckpointSaveError(CheckpointError):
    """Writing a checkpoint failed (disk full, no permission); the previous checkpoint is untouched."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights as plain contiguous CPU tensors; a tied output head is stored once (as the embedding)."""
    seen: dict[int, str] = {}
    out = {}
    for name, t in model.state_dict().items():
        if id(t) in seen or (t.untyped_storage().data_ptr() in seen and t.numel() > 0):
            continue
        seen[id(t)] = name
        seen[t.untyped_storage().data_ptr()] = name
        out[name] = t.detach().to("cpu").contiguous()
    return out


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, st in opt_state["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().to("cpu").contiguous()
                meta["state"][str(pid)][k] = "tensor"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for pid, entries in meta["state"].items():
        key: Any = int(pid) if pid.lstrip("-").isdigit() else pid
        state[key] = {k: (tensors[f"{pid}.{k}"] if v == "tensor" else v) for k, v in entries.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path,
    *,
    model_tensors: dict[str, torch.Tensor],
    config: dict,
    tokenizer=None,
    optimizer_state: dict | None = None,
    trainer_state: dict | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` atomically (temporary sibling folder, then rename).

    If ``folder`` already exists it is replaced; should the process die half-way, the old folder (or its
    ``.old`` sibling, which ``resolve`` also accepts) is left intact.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for name, t in model_tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save non-finite weights (tensor '{name}'); the last good "
                                  f"checkpoint is kept")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        save_file(model_tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp)
        if optimizer_state is not None:
            tensors, meta = _flatten_optimizer(optimizer_state)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(meta), "utf-8")
        if trainer_state is not None:
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1), "utf-8")
        for name, data in (extra_files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, (bytes, bytearray)):
                target.write_bytes(data)
            elif isinstance(data, str):
                target.write_text(data, "utf-8")
            else:
                target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for p in files:
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        manifest = {"files": {str(p.relative_to(tmp)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                              for p in files}}
        write_json_atomic(tmp / MANIFEST, manifest)
        _fsync_dir(tmp)
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            raise CheckpointSaveError(f"could not write checkpoint {folder}: {_describe_write_error(e, tmp)}; "
                                      f"the previous checkpoint is unchanged") from e
        raise
    return folder


def _describe_write_error(e: BaseException, tmp: Path) -> str:
    from ..train.fsutil import describe_os_error, is_disk_full

    if isinstance(e, OSError):
        return describe_os_error(e)
    if is_disk_full(e):  # safetensors reports ENOSPC as its own error type, without the path
        import errno

        return describe_os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp.parent)))
    return str(e)


def verify(folder: Path) -> dict:
    """Check a checkpoint folder against its manifest; return the manifest."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not mpath.exists():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {MANIFEST}); it was interrupted "
                              f"while being written or is not a scratchlm checkpoint")
    try:
        manifest = json.loads(mpath.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mpath} is not valid JSON: {e}") from e
    for name, info in manifest["files"].items():
        p = folder / name
        if not p.exists():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
        size = p.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(f"{p} has {size} bytes but the manifest says {info['bytes']}: the file was "
                                  f"truncated or edited")
        if sha256_file(p) != info["sha256"]:
            raise CheckpointError(f"{p} does not match its sha256 in {mpath}: the file was modified")
    return manifest


def resolve(path: str | Path) -> Path:
    """Accept a checkpoint folder, a ``checkpoints/`` folder (follows LATEST) or a run folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        pointer = candidate / LATEST
        if pointer.exists():
            target = candidate / pointer.read_text("utf-8").strip()
            if (target / MANIFEST).exists():
                return target
            old = target.with_name(target.name + ".old")  # killed between save_checkpoint's two renames
            if not target.exists() and (old / MANIFEST).exists():
                return old
        if (candidate / MANIFEST).exists():
            return candidate
        old = candidate.with_name(candidate.name + ".old")
        if not candidate.exists() and (old / MANIFEST).exists():
            return old
    if (path / "model" / MANIFEST).exists():
        return path / "model"
    raise CheckpointError(f"no checkpoint found at {path} (looked for {MANIFEST}, {LATEST} and checkpoints/)")


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} not found") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


def load_tensors(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    path = Path(folder) / name
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def load_optimizer_state(folder: Path) -> dict:
    folder = Path(folder)
    path = folder / "optimizer.json"
    try:
        meta = json.loads(path.read_text("utf-8"))
        return _unflatten_optimizer(load_tensors(folder, "optimizer.safetensors"), meta)
    except FileNotFoundError as e:
        raise CheckpointError(f"{e.filename or path} not found: {folder} is not a training checkpoint") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e})") from e


def rewrite_config(folder: Path, config: dict) -> Path:
    """``folder`` with a new ``config.json`` and every other file as it was, rewritten atomically with a fresh
    manifest (so the loader's hash check still holds). For facts learnt after the weights were saved, such as a
    summarizer's fitted lead switch."""
    folder = Path(folder)
    verify(folder)
    keep = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name not in ("config.json", MANIFEST, "model.safetensors")}
    return save_checkpoint(folder, model_tensors=load_tensors(folder), config=config, extra_files=keep)


def step_of(folder: Path) -> int | None:
    """The step of a ``step_0000123`` (or ``step_0000123.old``) folder; None for other names."""
    name = Path(folder).name
    if not name.startswith("step_"):
        return None
    digits = name[5:].split(".")[0]
    return int(digits) if digits.isdigit() else None


def load_model_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "") -> None:
    """Load weights strictly, allowing a tied output head to be absent; name any mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    # a weight tied to another one (output head = embedding) is stored once (model_state): absent is fine when
    # a tensor sharing its storage is present
    by_storage: dict[int, list[str]] = {}
    for k, t in own.items():
        if t.numel():
            by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(k)
    tied = {k for k in missing if own[k].numel()
            and any(o in tensors for o in by_storage.get(own[k].untyped_storage().data_ptr(), []) if o != k)}
    missing = [k for k in missing if k not in tied]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"weights in {source or 'checkpoint'} do not match the model: missing "
                              f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    for k, t in tensors.items():
        if own[k].shape != t.shape:
            raise CheckpointError(f"{source}: '{k}' has shape {tuple(t.shape)} in the checkpoint but "
                                  f"{tuple(own[k].shape)} in the model config")
    model.load_state_dict(tensors, strict=False)


def set_pointer(checkpoints_dir: Path, name: str, target: str) -> None:
    tmp = Path(checkpoints_dir) / f".{name}.tmp-{os.getpid()}"
    tmp.write_text(target + "\n", "utf-8")
    os.replace(tmp, Path(checkpoints_dir) / name)


def read_pointer(checkpoints_dir: Path, name: str) -> str | None:
    p = Path(checkpoints_dir) / name
    return p.read_text("utf-8").strip() if p.exists() else None


def prune(checkpoints_dir: Path, keep_last: int) -> None:
    """Delete old step folders, never the ones LATEST or BEST point to."""
    checkpoints_dir = Path(checkpoints_dir)
    protected = {read_pointer(checkpoints_dir, LATEST), read_pointer(checkpoints_dir, BEST)}
    steps = sorted(p for p in checkpoints_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".old"))
    for p in steps[:-keep_last] if keep_last > 0 else []:
        if p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)
    for p in checkpoints_dir.glob(".step_*.tmp-*"):  # leftovers of a killed save
        shutil.rmtree(p, ignore_errors=True)


def model_state_from_dict(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A gathered (FSDP) state dict made safetensors-ready: CPU, contiguous, tied head dropped."""
    tied = getattr(getattr(model, "cfg", None), "tie_embeddings", False)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()
            if not (tied and k == "lm_head.weight")}
