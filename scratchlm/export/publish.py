"""Publish a trained model folder as ``models/<name>/``: the folder a user loads by name.

A published folder holds ``model.safetensors`` (fp32, or bf16 to halve it), ``config.json``,
``tokenizer.json``, a model card ``README.md`` and ``manifest.json`` with the sha256 of every other file,
which the loader verifies. Publishing never overwrites an existing folder unless asked, and writes through a
temporary sibling folder, so an interrupted publish leaves the old one intact.
"""

from __future__ import annotations

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

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": None}  # int8: a `scratchlm quantize` folder, as is


class PublishError(ValueError):
    """A publish request that would lose something or produce a folder over its size limit."""


def _card(name: str, config: dict, files: dict[str, dict], sections: Sequence[tuple[str, str]],
          parameters: int | None = None) -> str:
    model = config.get("model", {})
    lines = [f"# {name}", ""]
    if model:
        lines += ["| architecture | value |", "|---|---|"]
        if parameters:
            lines.append(f"| parameters | {parameters:,} |")
        lines += [f"| {k} | {v} |" for k, v in model.items()]
        lines.append("")
    for title, body in sections:
        lines += [f"## {title}", "", body.strip(), ""]
    lines += ["## Files", "", "| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| `{f}` | {info['bytes']:,} | `{info['sha256']}` |" for f, info in sorted(files.items())]
    lines += ["", "The loader checks these hashes (`manifest.json`) every time the model is loaded by name.", ""]
    return "\n".join(lines)


def count_weights(tensors: dict[str, torch.Tensor]) -> int:
    """The model's parameters as stored (a tied embedding once; an int8 layer's per-row scales not counted)."""
    from ..model.int8 import SCALE_SUFFIX

    return sum(t.numel() for k, t in tensors.items() if not k.endswith(SCALE_SUFFIX))


def _table(header: Sequence[str], rows: list[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# the metrics a card's score table shows, in this order (what `scratchlm evaluate --json` reports, flattened)
CARD_METRICS = ("val_bpb", "val_loss", "accuracy", "f1_macro", "bleu", "chrf", "rouge1", "rouge2", "rougeL",
                "rouge1_mean_refs", "rouge2_mean_refs", "rougeL_mean_refs")


def flat_scores(metrics: dict) -> dict[str, float]:
    """The headline numbers of a ``scratchlm evaluate --json`` result, one level deep: bits/byte and loss for
    a language model; accuracy, macro F1 and each class's F1 (``f1_<label>``) for a classifier; BLEU/chrF
    scores, or ROUGE F1 (best and mean over references), for a seq2seq model."""
    out = {k: float(metrics[k]) for k in ("val_bpb", "val_loss", "accuracy", "f1_macro")
           if isinstance(metrics.get(k), (int, float))}
    for name in ("bleu", "chrf"):
        if isinstance(metrics.get(name), dict) and "score" in metrics[name]:
            out[name] = float(metrics[name]["score"])
    rouge = metrics.get("rouge")
    if isinstance(rouge, dict):
        out.update({k: float(v) for k, v in rouge.items() if k.startswith("rouge") and isinstance(v, (int, float))
                    and not k.endswith(("_precision", "_recall"))})
    report = metrics.get("report") or {}
    for label in metrics.get("label_names") or []:
        if isinstance(report.get(label), dict) and "f1-score" in report[label]:
            out[f"f1_{label}"] = float(report[label]["f1-score"])
    return out


def scores_table(scores: dict[str, dict]) -> str:
    """A markdown table of ``scores`` (data -> evaluate result), one row per data set."""
    flat = {name: flat_scores(m) for name, m in scores.items()}
    extra = sorted({k for f in flat.values() for k in f} - set(CARD_METRICS))
    columns = [k for k in CARD_METRICS if any(k in f for f in flat.values())] + extra
    rows = [[name, *(f"{f[k]:.4f}" if k in f else "" for k in columns)] for name, f in flat.items()]
    return _table(["data", *columns], rows)


def run_sections(run: str | Path, config: dict, scores: dict[str, dict] | None = None,
                 checkpoint: Path | None = None) -> list[tuple[str, str]]:
    """Model-card sections read from a training run folder: what it trained on (corpora, licences, documents,
    redactions), how long, and the held-out scores (``scores``: name -> metrics, e.g. from
    ``scratchlm evaluate --json``, else the run's report.json). The step, tokens and time are those of
    ``checkpoint`` (the one published) when it holds a trainer state, else of the run's latest checkpoint."""
    from ..data.registry import DATASETS

    run = Path(run)
    sections = []
    cleaning_path = run / "data" / "cleaning.json"
    cleaning = json.loads(cleaning_path.read_text("utf-8")) if cleaning_path.exists() else {}
    corpora = (config.get("data") or {}).get("corpora") or []
    if corpora:
        rows = []
        for corpus in corpora:
            source, split = corpus.get("source"), corpus.get("split", "train")
            key = source if split == "train" else f"{source}_{split}"
            spec = DATASETS.get(source)
            info = cleaning.get(key, {})
            chars = info.get("train", {}).get("chars_out")
            redacted = sum((info.get("train", {}).get("redactions") or {}).values())
            rows.append([f"{source}:{split}", info.get("train_docs", ""), f"{chars:,}" if chars else "",
                         redacted if info else "", spec.license if spec else "your file"])
        sections.append(("Training data", _table(
            ["corpus", "training documents", "characters", "PII spans redacted", "licence"], rows)))
    report_path = run / "report.json"
    report = json.loads(report_path.read_text("utf-8")) if report_path.exists() else {}
    if report.get("task") in ("classify", "translate", "summarize"):
        sections.append(("Task and data", _task_data(report, config)))
    state = {}
    pointer = run / "checkpoints" / ckpt.LATEST
    state_path = Path(checkpoint or "") / "trainer_state.json"
    if not (checkpoint and state_path.exists()) and pointer.exists():
        state_path = run / "checkpoints" / pointer.read_text("utf-8").strip() / "trainer_state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text("utf-8"))
    if checkpoint is not None and state and report.get("steps") != state.get("step"):
        report = {}  # the run's report describes another step (its end), not the checkpoint published
    step = report.get("steps", state.get("step"))
    tokens = report.get("tokens_seen", state.get("tokens_seen"))
    seconds = report.get("train_seconds", state.get("elapsed"))
    max_steps = (config.get("train") or {}).get("max_steps")
    training = [["optimizer steps", f"{step:,} of {max_steps:,}" if step and max_steps else step],
                ["tokens seen", f"{tokens:,}" if tokens else ""],
                ["training wall-clock", f"{seconds / 3600:.2f} h" if seconds else ""],
                ["schedule", (config.get("train") or {}).get("schedule", "")]]
    sections.append(("Training", _table(["", ""], [row for row in training if row[1]])))
    scores = scores or {**report.get("validation_by_corpus", {}), **report.get("final_eval", {})}
    if not scores and isinstance(report.get("test"), dict) and report.get("test_split"):
        scores = {report["test_split"]: report["test"]}  # a task run's test scores (the trained weights)
    if scores:
        sections.append(("Held-out scores", scores_table(scores)))
    return sections


def _task_data(report: dict, config: dict) -> str:
    """A task model's card section: the dataset, its licence, the rows of each split, where it started from."""
    from ..data.registry import DATASETS

    recipe = config.get("recipe") or {}
    dataset = report.get("dataset") or (recipe.get("data") or {}).get("dataset", "")
    spec = DATASETS.get(dataset)
    rows = [["task", report["task"]], ["dataset", f"`{dataset}`" + (f": {spec.description}" if spec else "")],
            ["licence", spec.license if spec else "your file"]]
    if report.get("data"):
        rows.append(["rows (train; validation; test)", str(report["data"]).replace("|", "/")])
    if report.get("test_split"):
        rows.append(["test set (read once, after training)", f"`{report['test_split']}`"])
    if recipe.get("init"):
        rows.append(["started from", f"`{recipe['init']}`" + (f" (in-domain stage: `{recipe['pretrain']}`)"
                                                           if recipe.get("pretrain") else "")])
    if report.get("description"):
        rows.append(["model", report["description"]])
    if report.get("command"):
        rows.append(["trained by", f"`{report['command']}`"])
    return _table(["", ""], rows)


def publish(source: str | Path, name: str, models_root: str | Path, *, dtype: str = "fp32",
            sections: Sequence[tuple[str, str]] = (), extra_config: dict | None = None,
            max_bytes: int | None = None, overwrite: bool = False,
            extra_files: dict[str, Path] | None = None) -> Path:
    """Copy the model in ``source`` (a model or checkpoint folder) to ``models_root/name``.

    ``sections`` are (title, markdown) pairs for the model card (corpora, scores, commands, ...).
    ``extra_config`` is merged into config.json under ``published``; ``extra_files`` (name -> path) are copied
    in and covered by the manifest (a loss-curve picture for the card). Raises PublishError if the weights
    exceed ``max_bytes`` or the target exists and ``overwrite`` is false."""
    if dtype not in DTYPES:
        raise PublishError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = ckpt.resolve(source)
    ckpt.verify(folder)
    target = Path(models_root) / name
    if target.exists() and not overwrite:
        raise PublishError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    config = ckpt.read_config(folder)
    if (dtype == "int8") != bool(config.get("quantization")):
        raise PublishError(f"dtype int8 publishes a folder made by `scratchlm quantize` as it is; {folder} "
                           + ("is one: pass dtype int8" if config.get("quantization") else "is not int8: quantize "
                              "it first, or publish it as fp32/bf16"))
    tensors = ckpt.load_tensors(folder)
    if DTYPES[dtype] is not None:
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
        for fname, path in (extra_files or {}).items():
            shutil.copy2(path, tmp / fname)
        files = {str(p.relative_to(tmp)): {"sha256": ckpt.sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "README.md").write_text(_card(name, config, files, sections, count_weights(tensors)), "utf-8")
        files["README.md"] = {"sha256": ckpt.sha256_file(tmp / "README.md"),
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
