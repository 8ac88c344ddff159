"""What every fine-tuning stage shares: making the pretrained model it starts from, counting parameters,
recording the command line."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch

from .config import ConfigError


def ensure_pretrained(init: str | None, pretrain: str | None, overrides: list[str] | None = None,
                      data_dir: str | None = None, log=print, *, progress: bool = True) -> None:
    """Run the pretraining recipe ``pretrain`` when the model folder ``init`` does not exist yet (it resumes
    exactly if a previous attempt was interrupted). ``progress=False`` (the fine-tuning stage's
    ``train.progress``) turns the nested stage's progress bar off too."""
    if init and (Path(init) / "config.json").exists():
        return
    if not pretrain:
        raise ConfigError(f"init: {init} does not exist; pretrain a model first or set `pretrain:` to a "
                          f"pretraining recipe")
    from . import pretrain as pretrain_stage
    from .cli import _recipe

    pcfg = pretrain_stage.build_config(_recipe(pretrain), overrides or [])
    if data_dir:
        pcfg.data.data_dir = data_dir
    pcfg.train.resume = True
    pcfg.train.progress = pcfg.train.progress and progress
    target = Path(pcfg.train.out_dir) / "model"
    if init is None or Path(init).resolve() != target.resolve():
        raise ConfigError(f"init: {init} is not what pretraining recipe {pretrain!r} makes ({target})")
    log(f"init: {init} does not exist yet; running the pretraining recipe {pretrain!r} first")
    pretrain_stage.run(pcfg, log=log)


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
