"""The shape every stage shares.

A stage turns a recipe into a trained model folder and a ``report.json`` beside it:

1. ``stage_recipe`` (or ``config.load_recipe`` for pretraining and distillation) builds its config from the
   recipe, the command line's flags and dotted overrides; a fine-tuning stage's config is a ``StageConfig``;
2. the stage loads its data and the model it starts from, and builds a Task for the shared training loop;
3. ``fit_and_report`` trains it, adds the outcome (steps, time, why it stopped, the model folder) to what
   the stage says about the run, and lets the stage score the saved model and write ``report.json``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .. import __version__
from ..config import ConfigError, apply_overrides, deep_merge, from_dict, load_recipe, parse_override, to_dict
from ..train.config import TrainConfig, check_epochs
from ..train.fsutil import check_run_folder
from ..train.trainer import Task, Trainer


@dataclass
class StageConfig:
    """What the recipe of every fine-tuning stage (classification, translation, summarization) holds."""

    name: str = "decoder"  # the run's folder under out_root, and its name in the report
    out_root: str = "runs"
    # a pretrained model (a folder or a published name): the decoder's weights, and the tokenizer every neural
    # model uses
    init: str | None = None
    # a pretraining recipe that makes `init` when it does not exist yet (run first, resumable)
    pretrain: str | None = None
    pretrain_overrides: list[str] = field(default_factory=list)  # dotted overrides for that recipe
    init_weights: Literal["pretrained", "random"] = "pretrained"  # random: the from-scratch ablation
    dropout: float | None = None  # the decoder's residual/MLP dropout while fine-tuning; None: as pretrained
    epochs: float | None = None  # sets train.max_steps (a smaller train.max_steps or max_time_s still caps it)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir) if self.train.out_dir else Path(self.out_root) / self.name


def finetune_train(lr: float, best_metric: str, best_mode: str) -> TrainConfig:
    """A fine-tuning stage's training defaults (the recipe's ``train`` section is merged over them): a
    linear decay to 0 after 50 warmup steps, evaluation and a checkpoint every 200 steps, early stopping
    after 3 evaluations without improvement of ``best_metric``."""
    return TrainConfig(out_dir="", max_steps=100000, lr=lr, min_lr_ratio=0.0, warmup_steps=50, schedule="linear",
                       weight_decay=0.01, micro_batch_size=16, eval_interval=200, eval_batches=0, save_interval=200,
                       early_stopping_patience=3, best_metric=best_metric, best_mode=best_mode, compile="off")


def stage_recipe(cls: type, yaml_path: str | Path | None, overrides: list[str] | None, defaults: dict | None,
                 *, default_train: TrainConfig, sections: Callable[[dict], list[str]]):
    """Defaults <- YAML recipe <- ``defaults`` (what a CLI verb sets) <- ``key=value`` overrides, as ``cls``.

    The recipe's ``train`` section is merged over ``default_train`` (the stage's, not the pretraining ones).
    Per-kind sections, ``by_kind: {<key>: {...}}``, apply under the overrides for the keys ``sections(recipe)``
    names (e.g. the run's kind)."""
    parsed = [parse_override(o) for o in overrides or []]
    data = load_recipe(yaml_path, overrides, defaults)
    by_kind = data.pop("by_kind", None) or {}
    if not isinstance(by_kind, dict):
        raise ConfigError("by_kind must map a kind (or 'recurrent') to a config section")
    for key in sections(data):
        section = by_kind.get(key)
        if section:
            data = apply_overrides(deep_merge(data, section), parsed)
    data["train"] = {**to_dict(default_train), **(data.get("train") or {})}
    return from_dict(cls, data)


def global_batch(train: TrainConfig) -> int:
    return train.global_batch_size or train.micro_batch_size


def set_max_steps(train: TrainConfig, epochs: float | None, units_per_epoch: float, units_per_step: int = 1) -> None:
    """``epochs`` passes over the training data (``units_per_epoch`` rows or steps) as ``train.max_steps``.

    A ``train.max_steps`` given as well still caps the run (whichever ends first, as ``max_time_s`` does): it
    used to be overwritten silently, so ``train.max_steps=120`` ran a whole epoch and its bar counted to it."""
    check_epochs(epochs)
    if epochs is not None:
        train.max_steps = min(train.max_steps, max(1, math.ceil(epochs * units_per_epoch / units_per_step)))


def guard_run_folder(train: TrainConfig, out_dir: str | Path, log=print) -> None:
    """Before a stage writes into ``out_dir``: a folder that already holds a run (checkpoints, a model, a report)
    is continued only with ``train.resume``, replaced only with ``train.overwrite`` (the old run is moved aside
    first), and refused otherwise. Prepared data alone does not make a run."""
    import os

    check_run_folder(out_dir, resume=train.resume, overwrite=train.overwrite,
                     main=os.environ.get("RANK", "0") == "0", log=log)


def fit_and_report(train: TrainConfig, task: Task, *, run_config: dict, tokenizer, info: dict,
                   report: Callable[[dict, Trainer], dict], flops_per_token: float | None = None) -> dict:
    """Train ``task`` with the shared loop. ``info`` (what the run is) gains its outcome; the main process
    then hands both to ``report``, which scores the saved model and returns report.json's content, while the
    other processes (torchrun) return ``info`` as it is."""
    trainer = Trainer(train, task, run_config=run_config, tokenizer=tokenizer, flops_per_token=flops_per_token)
    result = trainer.fit()
    info = {**info, "train_seconds": round(result.train_seconds, 1), "steps": result.step,
            "best_step": result.best_step, "stopped_because": result.stopped_because,
            "model_dir": str(result.model_dir)}
    if result.stop_signal is not None:
        # Stopped by SIGTERM/SIGINT (preemption, Ctrl-C, the end of a sitting): the checkpoint is saved, and the
        # process must end now. Scoring the model here (a test pass, a pretraining run's final evaluation) took
        # minutes, past any scheduler's grace period; the report is made when the resumed run finishes.
        info["stop_signal"] = result.stop_signal
        if trainer.dist.is_main:  # what the run is and where it stopped, for scripts (no scores: not scored)
            write_json(Path(train.out_dir) / "report.json", info)
        return info
    return report(info, trainer) if trainer.dist.is_main else info


def report_header(task: str, dataset: str, name: str, kind: str) -> dict:
    """The keys every fine-tuning stage's report.json starts with."""
    return {"task": task, "dataset": dataset, "name": name, "kind": kind, "scratchlm_version": __version__,
            "command": command_line()}


def write_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def count_parameters(model: torch.nn.Module, trainable: bool = False) -> int:
    """Parameters (shared ones once); ``trainable``: only those with requires_grad."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def command_line() -> str:
    """The command that is running, as a user would type it."""
    return "scratchlm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
