"""The training section of every recipe (pretraining, fine-tuning, baselines, distillation)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal


def check_budget(name: str, value: object, *, integer: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a positive, finite number (an int if ``integer``).

    For every budget of a run -- steps, seconds, epochs, minutes: zero or a negative budget would train
    nothing and still save a random-weight "model", so it is an error, not a no-op."""
    kind = "integer" if integer else "number"
    wanted = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name} must be positive, got {value}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value} (leave it unset for no limit)")


def check_epochs(epochs: float | None, name: str = "epochs") -> None:
    """``epochs`` (``None`` = not used) must be a positive number: 0 or -1 epochs is not a run."""
    if epochs is not None:
        check_budget(name, epochs)


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 1337
    # how long: whichever limit comes first
    max_steps: int = 1000
    max_time_s: float | None = None  # wall-clock budget; stops cleanly, evaluates and saves
    # batch: global batch (sequences per optimizer step) = micro_batch_size * grad_accum * world_size
    micro_batch_size: int = 16
    global_batch_size: int | None = None  # None = micro_batch_size * world_size (no accumulation)
    # optimizer: AdamW, decoupled weight decay, no decay on norms/biases/embeddings
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    # wsd = warmup-stable-decay: constant LR, then a linear decay over the last `decay_fraction` of the
    # horizon, so a long run can stop, resume or be extended anywhere before its decay starts
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    decay_fraction: float = 0.2
    decay_steps: int | None = None  # horizon of the decay; None = max_steps, or the steps that fit max_time_s
    budget_calibration_steps: int = 10  # with max_time_s: steps timed to estimate how many fit the budget
    weight_decay: float = 0.1
    # fine-tuning schedules from ULMFiT (Howard & Ruder 2018), for decoders: each block below the top gets
    # `layer_lr_decay` times the learning rate of the one above it (discriminative fine-tuning; 1 = off), and
    # with `unfreeze_steps` > 0 the layers start training top-down, one more block every `unfreeze_steps`
    # steps (gradual unfreezing; the head and final norm first, the embeddings last)
    layer_lr_decay: float = 1.0
    unfreeze_steps: int = 0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = off
    # numerics and speed
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the hardware runs it fast
    compile: Literal["auto", "on", "off"] = "auto"
    threads: int | None = None  # CPU intra-op threads; None = torch default
    # evaluation, early stopping, checkpoints, logs
    eval_interval: int = 200
    eval_batches: int = 20  # batches of micro_batch_size per evaluation; 0 = the whole validation set
    eval_at_start: bool = False
    log_interval: int = 10
    save_interval: int = 500
    save_interval_s: float | None = None  # also save when this many seconds passed since the last checkpoint
    keep_last: int = 2
    # checkpoint averaging: the final model is the mean of the last `average_last` checkpoints' weights when
    # that scores better on validation (best_metric) than the best single checkpoint; 0 = off
    average_last: int = 0
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    best_metric: str = "val_loss"
    best_mode: Literal["min", "max"] = "min"
    resume: bool = False  # continue from out_dir/checkpoints/last when it exists
    # start a new run in an out_dir that holds one: the old run is moved aside to <out_dir>.old-<time> first
    # (without it, or resume, such a folder is refused: two runs never mix in one folder)
    overwrite: bool = False
    max_bad_steps: int = 3  # consecutive non-finite losses before stopping with an error
    progress: bool = True
    tensorboard: bool = True
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"  # under torchrun

    def validate(self) -> None:
        # budgets: whichever comes first stops the run, so each one that is set must allow some training
        check_budget("train.max_steps", self.max_steps, integer=True)
        if self.max_time_s is not None:
            check_budget("train.max_time_s", self.max_time_s)
        if self.decay_steps is not None:
            check_budget("train.decay_steps", self.decay_steps, integer=True)
        if self.micro_batch_size <= 0:
            raise ValueError(f"train.micro_batch_size must be positive, got {self.micro_batch_size}")
        if self.global_batch_size is not None and self.global_batch_size <= 0:
            raise ValueError(f"train.global_batch_size must be positive, got {self.global_batch_size}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if self.average_last < 0 or self.average_last == 1:
            raise ValueError(f"train.average_last must be 0 (off) or >= 2 checkpoints, got {self.average_last}")
        if self.average_last > self.keep_last:
            raise ValueError(f"train.average_last ({self.average_last}) needs that many checkpoints on disk: set "
                             f"train.keep_last >= {self.average_last}")
        if self.save_interval_s is not None:
            check_budget("train.save_interval_s", self.save_interval_s)
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 < self.layer_lr_decay <= 1:
            raise ValueError(f"train.layer_lr_decay must be in (0, 1] (1 = one learning rate for all layers), got "
                             f"{self.layer_lr_decay}")
        if self.unfreeze_steps < 0:
            raise ValueError(f"train.unfreeze_steps must be >= 0 (0 = all layers train from the start), got "
                             f"{self.unfreeze_steps}")
