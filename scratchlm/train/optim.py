"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedule."""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn

from .config import TrainConfig

_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_depth(name: str, n_layer: int) -> int:
    """How far below the output a parameter sits: 0 for the head and the final norm (and anything that is not a
    block or the embedding), n_layer - i for block i, n_layer + 1 for the token embedding."""
    m = _BLOCK.search(name)
    if m:
        return n_layer - int(m.group(1))
    if name.endswith("embed.weight") or ".embed." in name or name.startswith("embed."):
        return n_layer + 1
    return 0


def param_groups(model: nn.Module, weight_decay: float, layer_lr_decay: float = 1.0,
                 by_depth: bool = False) -> list[dict]:
    """Decay 2-D weight matrices of linear layers; never norms, biases or embeddings.

    ``by_depth`` (discriminative learning rates, gradual unfreezing): one decay and one no-decay group per depth
    (``layer_depth``), each with ``depth`` and ``lr_scale = layer_lr_decay ** depth``."""
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            no_decay_ids.add(id(module.weight))
    n_layer = getattr(getattr(model, "cfg", None), "n_layer", 0)
    groups: dict[tuple[int, bool], list] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))  # tied weights appear once (as the embedding: it is met first)
        depth = layer_depth(name, n_layer) if by_depth else 0
        groups.setdefault((depth, p.dim() >= 2 and id(p) not in no_decay_ids), []).append(p)
    if not by_depth:
        return [{"params": groups.get((0, True), []), "weight_decay": weight_decay},
                {"params": groups.get((0, False), []), "weight_decay": 0.0}]
    return [{"params": ps, "weight_decay": weight_decay if decays else 0.0, "depth": depth,
             "lr_scale": layer_lr_decay ** depth} for (depth, decays), ps in sorted(groups.items())]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    by_depth = cfg.layer_lr_decay != 1.0 or cfg.unfreeze_steps > 0
    groups = [g for g in param_groups(model, cfg.weight_decay, cfg.layer_lr_decay, by_depth) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    device = next(p.device for g in groups for p in g["params"])
    # The fused kernel is one pass over all parameters; it exists for CPU and CUDA in torch >= 2.4.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


def group_lr(lr: float, group: dict, step: int, cfg: TrainConfig) -> float:
    """A parameter group's learning rate at ``step``: the schedule's ``lr`` times its depth's scale, and 0
    while gradual unfreezing has not reached its depth yet (AdamW then leaves it untouched, decay included)."""
    if cfg.unfreeze_steps and step < group.get("depth", 0) * cfg.unfreeze_steps:
        return 0.0
    return lr * group.get("lr_scale", 1.0)


def lr_at(step: int, cfg: TrainConfig, horizon: int | None = None) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine/linear/constant/wsd.

    The decay ends at ``horizon`` if given (the trainer's estimate of how many steps fit a time budget),
    else at ``decay_steps``, else at ``max_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    horizon = horizon or cfg.decay_steps or cfg.max_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
    if cfg.schedule == "linear":
        return cfg.lr - (cfg.lr - min_lr) * progress
    if cfg.schedule == "wsd":
        decay_start = horizon - cfg.decay_fraction * (horizon - cfg.warmup_steps)
        if step < decay_start:
            return cfg.lr
        return cfg.lr - (cfg.lr - min_lr) * min(1.0, (step - decay_start) / max(1.0, horizon - decay_start))
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * progress))
