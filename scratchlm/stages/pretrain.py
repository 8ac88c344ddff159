"""The pretraining stage: prepare data, build the model (or start from ``init``), run the shared training
loop, report bits-per-byte. ``ensure_pretrained`` runs it on demand for a fine-tuning stage whose ``init``
does not exist yet."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from .. import __version__
from ..config import ConfigError, find_recipe, from_dict, load_recipe, to_dict
from ..data.prepare import DataConfig, load_prepared, prepare
from ..data.shards import write_shard
from ..data.sources import load_texts
from ..model import checkpoint as ckpt
from ..model.folder import load_decoder, resolve_model
from ..model.transformer import PRESETS, ModelConfig, Transformer
from ..tasks.lm import LMTask, evaluate_tokens, token_byte_lengths
from ..train import distributed as dist_utils
from ..train.config import TrainConfig
from ..train.hardware import pick_device
from .base import fit_and_report, guard_run_folder

T = TypeVar("T")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    model_preset: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    # held-out texts scored (bits-per-byte) after training: "name:split" of any dataset or file
    final_eval: list[str] = field(default_factory=lambda: ["wikitext2:test"])
    # continued pretraining: start from this model (a folder or a published name: its weights, architecture
    # and tokenizer; the `model` section is ignored) instead of random weights
    init: str | None = None
    pretrain: str | None = None  # the pretraining recipe that makes `init` when it does not exist yet
    # cap on the tokens scored per held-out text after training (evenly spaced windows); None = all of it
    final_eval_max_tokens: int | None = None


def build_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """Defaults <- YAML recipe <- ``key=value`` overrides; ``model.preset`` expands under explicit fields."""
    data = load_recipe(yaml_path, overrides)
    model = dict(data.get("model") or {})
    name = model.pop("preset", None) or data.get("model_preset")
    if name:
        if name not in PRESETS:
            raise ConfigError(f"model.preset: unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
        model = {**PRESETS[name], **model}
        data["model_preset"] = name
    data["model"] = model
    cfg = from_dict(PretrainConfig, data)
    cfg.model.validate()
    return cfg


def ensure_pretrained(init: str | None, pretrain: str | None, overrides: list[str] | None = None,
                      data_dir: str | None = None, log=print, *, progress: bool = True) -> None:
    """Run the pretraining recipe ``pretrain`` when the model ``init`` (a folder or a published name) does not
    exist yet (it resumes exactly if a previous attempt was interrupted). ``progress=False`` (the fine-tuning
    stage's ``train.progress``) turns the nested stage's progress bar off too."""
    if init:
        try:
            resolve_model(init)
            return
        except (FileNotFoundError, ckpt.CheckpointError):
            pass
    if not pretrain:
        raise ConfigError(f"init: {init} does not exist; pretrain a model first or set `pretrain:` to a "
                          f"pretraining recipe")
    cfg = build_config(find_recipe(pretrain), overrides or [])
    if data_dir:
        cfg.data.data_dir = data_dir
    cfg.train.resume = True
    cfg.train.progress = cfg.train.progress and progress
    target = Path(cfg.train.out_dir) / "model"
    if init is None or Path(init).resolve() != target.resolve():
        raise ConfigError(f"init: {init} is not what pretraining recipe {pretrain!r} makes ({target})")
    log(f"init: {init} does not exist yet; running the pretraining recipe {pretrain!r} first")
    run(cfg, log=log)


def quiet(*args, **kwargs) -> None:
    """A log that says nothing (the other processes under torchrun, nested stages)."""


def main_process_first(info: dist_utils.DistInfo, make: Callable[[bool], T]) -> T:
    """``make(True)`` on the main process, then ``make(False)`` on the others once it is done: under torchrun
    every process prepares the same data folder, and concurrent writers would race on its files."""
    if info.is_main:
        out = make(True)
    dist_utils.barrier(info)
    if not info.is_main:
        out = make(False)
    return out


def _final_eval(model: Transformer, tokenizer, names: list[str], data_dir, folder: Path, log,
                max_tokens: int | None = None, progress: bool = False) -> dict:
    """Bits-per-byte on named held-out texts (each split encoded once, evaluated in full)."""
    results = {}
    lengths = torch.as_tensor(token_byte_lengths(tokenizer))
    for item in names:
        source, _, split = item.partition(":")
        split = split or "validation"
        try:
            texts = load_texts(source, split, data_dir=data_dir, dropna=True)
        except (ValueError, OSError) as e:
            log(f"final eval: skipping {item}: {e}")
            continue
        shard = write_shard(texts, tokenizer, folder / f"eval_{source}_{split}", progress=False)
        del shard
        tokens = np.fromfile(folder / f"eval_{source}_{split}.bin",
                             dtype=np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32)
        results[item] = evaluate_tokens(model, tokens, lengths, max_tokens=max_tokens,
                                        progress=progress and f"score {item}")
    return results


def continue_from(cfg: PretrainConfig, log):
    """Load ``cfg.init`` (pretraining it first with ``cfg.pretrain`` if missing); its architecture and
    tokenizer replace the recipe's ``model`` and ``data.tokenizer``."""
    ensure_pretrained(cfg.init, cfg.pretrain, data_dir=cfg.data.data_dir, log=log, progress=cfg.train.progress)
    base = load_decoder(cfg.init)
    if cfg.data.tokenizer and Path(cfg.data.tokenizer).resolve() not in (base.folder.resolve(),
                                                                        (base.folder / "tokenizer.json").resolve()):
        raise ConfigError(f"data.tokenizer {cfg.data.tokenizer} is not the tokenizer of init {base.folder}: "
                          f"continued pretraining keeps the model's tokenizer (leave data.tokenizer empty)")
    cfg.data.tokenizer = str(base.folder)
    cfg.model = replace(base.model.cfg)
    return base


def _prepare_or_reuse(cfg: PretrainConfig, folder: Path, log):
    """The run's token shards. A resumed run keeps the shards it started on, even when the recipe's data
    section (or a default of this version) now differs: rebuilding would retrain the tokenizer and change
    the token stream under the checkpoint."""
    if cfg.train.resume and (folder / "prepare.json").exists():
        saved = json.loads((folder / "prepare.json").read_text("utf-8")).get("config")
        if saved != to_dict(cfg.data):
            log(f"resume: keeping the data prepared in {folder} (the recipe's data section differs from it now)")
        return load_prepared(folder)
    return prepare(cfg.data, folder, progress=cfg.train.progress, log=log)


def run(cfg: PretrainConfig, log=print) -> dict:
    """Pretrain end to end; returns the report written to ``<out_dir>/report.json``."""
    t0 = time.time()
    out = Path(cfg.train.out_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 talks
        log = quiet
    guard_run_folder(cfg.train, out, log)
    info = dist_utils.init(pick_device(cfg.train.device))
    base = continue_from(cfg, log) if cfg.init else None
    data = main_process_first(info, lambda main: _prepare_or_reuse(cfg, out / "data", log if main else quiet))
    tok = data.tokenizer
    if cfg.model.vocab_size != tok.vocab_size:
        cfg.model.vocab_size = tok.vocab_size  # the embedding table follows the tokenizer
    torch.manual_seed(cfg.train.seed)  # initial weights follow train.seed (torch's default seed is random)
    model = base.model.train() if base is not None else Transformer(cfg.model)
    if base is not None:
        log(f"continued pretraining from {base.folder}")
    log(f"model: {model.num_params() / 1e6:.2f}M parameters ({model.num_params(True) / 1e6:.2f}M without "
        f"embeddings), {model.flops_per_token() / 1e6:.1f} MFLOPs/token (training, fwd+bwd)")
    task = LMTask(model, data.train, data.val, block_size=cfg.model.block_size, seed=cfg.train.seed,
                  sampling=cfg.data.sampling, token_bytes=token_byte_lengths(tok))
    run_config = {"task": "lm", "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  **to_dict(cfg)}
    if base is not None:  # the whole lineage, so leakage checks downstream see the base's corpora too
        run_config["backbone"] = {"folder": str(base.folder), "data": base.config.get("data"),
                                  "backbone": base.config.get("backbone")}

    def report(info: dict, trainer) -> dict:
        best = load_decoder(info["model_dir"]).model
        progress = cfg.train.progress and trainer.dist.is_main
        per_corpus = {name: evaluate_tokens(best, np.asarray(shard.tokens), torch.as_tensor(task.token_bytes),
                                            max_tokens=cfg.final_eval_max_tokens, progress=progress and f"score {name}")
                      for name, shard in data.val_by_corpus.items()}
        final = _final_eval(best, tok, cfg.final_eval, cfg.data.data_dir, out / "data", log, cfg.final_eval_max_tokens,
                            progress)
        result = {**info, "tokens_seen": trainer.tokens_seen, "last_eval": trainer.last_eval,
                  "validation_by_corpus": per_corpus, "final_eval": final, "wall_seconds": round(time.time() - t0, 1)}
        (out / "report.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
        for name, m in {**per_corpus, **final}.items():
            log(f"{name:>28}: loss {m['val_loss']:.4f}  bpb {m.get('val_bpb', float('nan')):.4f}")
        return result

    return fit_and_report(cfg.train, task, run_config=run_config, tokenizer=tok, report=report,
                          info={"out_dir": str(out), "parameters": model.num_params()},
                          flops_per_token=model.flops_per_token())
