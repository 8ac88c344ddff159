"""The one training loop: pretraining, fine-tuning, baselines and distillation all run through it.

A stage supplies a ``Task``: the module to save, a loss module, deterministic micro-batches for a
given step, and an evaluation. The loop owns everything else: accumulation, clipping, schedule,
precision, compile, DDP/FSDP, NaN guards, evaluation, early stopping, checkpoints, logs and progress.

Batches are a pure function of (seed, step, micro-step, rank), and every RNG state is saved, so a run
resumed from any checkpoint is bit-identical to one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn

from ..model import checkpoint as ckpt
from ..model.transformer import ModelConfig
from . import distributed as dist_utils
from .config import TrainConfig
from .hardware import autocast, measure_matmul_peak, pick_device, pick_dtype
from .metrics_log import MetricsLogger
from .optim import build_optimizer, group_lr, lr_at


class TrainingDivergedError(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive non-finite losses or gradients."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Task(Protocol):
    """What a training stage provides to the loop."""

    model: nn.Module  # what is saved (weights in model.safetensors)

    def loss_module(self) -> nn.Module:
        """A module whose ``forward(batch) -> (loss_sum, count)`` computes the summed loss and the number
        of units (tokens, examples) it sums over; it wraps ``model`` and may add nothing else trainable."""

    def micro_batches(self, step: int, n_micro: int, micro_batch_size: int, rank: int,
                      world_size: int) -> list[dict[str, torch.Tensor]]:
        """The micro-batches of optimizer step ``step`` for this rank; deterministic."""

    def evaluate(self, model: nn.Module, max_batches: int) -> dict[str, float]:
        """Validation metrics (e.g. val_loss, val_ppl, val_bpb)."""

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens processed by one micro-batch (for tokens/s and MFU)."""


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    model_dir: Path
    best_metric: float | None
    best_step: int | None
    last_eval: dict[str, float] = field(default_factory=dict)
    stopped_because: str = "max_steps"
    train_seconds: float = 0.0
    stop_signal: int | None = None  # the signal that stopped the run (stopped_because "signal")


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [str(x) for x in np.random.get_state()[1].tolist()],
        "numpy_pos": int(np.random.get_state()[2]),
        "python": json.loads(json.dumps(random.getstate(), default=list)),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    keys = np.array([int(x) for x in state["numpy"]], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: TrainConfig, task: Task, *, run_config: dict, tokenizer=None,
                 flops_per_token: float | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.task = task
        self.run_config = run_config  # the resolved recipe, saved as config.json in every checkpoint
        self.tokenizer = tokenizer
        self.flops_per_token = flops_per_token
        self.device = pick_device(cfg.device)
        self.dist = dist_utils.init(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dtype = pick_dtype(cfg.precision, self.device)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        world = self.dist.world_size
        gbs = cfg.global_batch_size or cfg.micro_batch_size * world
        if gbs % (cfg.micro_batch_size * world):
            raise ValueError(f"train.global_batch_size ({gbs}) must be a multiple of micro_batch_size "
                             f"({cfg.micro_batch_size}) x processes ({world})")
        self.grad_accum = gbs // (cfg.micro_batch_size * world)
        self.global_batch_size = gbs
        self.step = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.bad_steps = 0
        self.tokens_seen = 0
        self.elapsed = 0.0  # training seconds, carried across resumes (the wall-clock budget uses it)
        self.last_eval: dict[str, float] = {}
        self.horizon: int | None = None  # decay horizon fitted to max_time_s (saved, so resume is exact)
        self._calib: list[float] = []
        self._refit_from: tuple[int, float] | None = None  # (step, elapsed) the horizon was last fitted at
        self._saved_step: int | None = None
        self.stop_signal: int | None = None  # set by SIGTERM/SIGINT: stop at the next optimizer-step boundary

    # ---- setup -------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed + self.dist.rank)
        self.task.model.to(self.device)
        self.loss_module = self.task.loss_module().to(self.device)
        use_compile = self._should_compile()
        self.wrapped = dist_utils.wrap(self.loss_module, self.dist, cfg.distributed, self.device)
        self.runner = torch.compile(self.wrapped) if use_compile else self.wrapped
        self.compiled = use_compile
        self.optimizer = build_optimizer(self.task.model, cfg)
        self.is_fsdp = self.dist.enabled and cfg.distributed == "fsdp"

    def _should_compile(self) -> bool:
        """compile=auto: on when the run is long enough to repay compilation (~1 min on a laptop CPU).

        On CPU, eager mode runs every elementwise op (RMSNorm, RoPE, SwiGLU, AdamW) as its own pass over
        memory; inductor fuses them, several times faster per step (docs/results.md)."""
        cfg = self.cfg
        if cfg.compile == "off":
            return False
        if self.device.type == "cpu" and not (shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")):
            self._print("compile: no C/C++ compiler found, which inductor needs on CPU; running eager")
            return False
        if cfg.compile == "on":
            return True
        # the work is steps x batch: 120 steps of 32 x 512 tokens (an in-domain stage) run ~10 minutes eager
        long_run = (cfg.max_steps >= 200 or cfg.max_steps * self.global_batch_size >= 2048) \
            and (cfg.max_time_s is None or cfg.max_time_s >= 120)
        return self.device.type in ("cuda", "cpu") and long_run

    def _maybe_resume(self) -> None:
        if not self.cfg.resume:
            return
        try:
            folder = ckpt.resolve(self.ckpt_dir)
        except ckpt.CheckpointError:
            # LATEST names a folder that is gone or incomplete: that is a damaged run, not an empty one
            name = ckpt.read_pointer(self.ckpt_dir, ckpt.LATEST) if self.ckpt_dir.is_dir() else None
            steps = [p for p in self.ckpt_dir.glob("step_*") if p.is_dir() and ckpt.step_of(p) is not None] \
                if self.ckpt_dir.is_dir() else []
            if not name and not steps:
                self._print(f"resume: no checkpoint in {self.ckpt_dir}; starting from scratch")
                return
            folder = self.ckpt_dir / name if name else max(steps, key=lambda p: ckpt.step_of(p) or 0)
        folder, state, tensors, opt_state = self._newest_good_checkpoint(folder)
        saved = ckpt.read_config(folder)
        saved_model, current_model = saved.get("model"), self.run_config.get("model")
        if saved_model is not None and current_model is not None:
            saved_model, current_model = without_defaults(saved_model), without_defaults(current_model)
            if saved_model != current_model:
                raise ckpt.CheckpointError(f"cannot resume from {folder}: its model config differs from this "
                                           f"run's ({_dict_diff(saved_model, current_model)})")
        for key in ("kind", "label_names", "rnn"):  # a task model's head must fit the data it resumes on
            if key in saved and key in self.run_config and saved[key] != self.run_config[key]:
                raise ckpt.CheckpointError(f"cannot resume from {folder}: its {key} {saved[key]!r} differs from "
                                           f"this run's {self.run_config[key]!r}")
        self._load_model_and_optimizer(folder, tensors, opt_state)
        self.step = state["step"]
        self.best_metric, self.best_step = state.get("best_metric"), state.get("best_step")
        self.evals_without_improvement = state.get("evals_without_improvement", 0)
        self.tokens_seen = state.get("tokens_seen", 0)
        self.elapsed = state.get("elapsed", 0.0)
        self.last_eval = state.get("last_eval", {})
        self.horizon = state.get("horizon")
        rngs = state.get("rng", [])
        if state.get("world_size") == self.dist.world_size and self.dist.rank < len(rngs):
            _set_rng_state(rngs[self.dist.rank])
        else:
            self._print("resume: process count changed, RNG streams are re-seeded (data order is unchanged)")
            seed_everything(self.cfg.seed + self.dist.rank + 1000003 * self.step)
        self._print(f"resumed from {folder} at step {self.step}")

    def _newest_good_checkpoint(self, first: Path) -> tuple[Path, dict, dict, dict]:
        """``first`` (what LATEST names) when it verifies and loads, else the newest older checkpoint that does
        (said aloud, and LATEST/BEST are pointed back at good folders); an error when none does."""
        first_step = ckpt.step_of(first)
        older = [p for p in self.ckpt_dir.glob("step_*") if p.is_dir() and p != first and ckpt.step_of(p) is not None
                 and (first_step is None or ckpt.step_of(p) < first_step) and p.name != first.name + ".old"]
        # for one step, the folder itself before its ".old" sibling (left by a kill between two renames)
        older.sort(key=lambda p: (ckpt.step_of(p), not p.name.endswith(".old")), reverse=True)
        problems: list[tuple[Path, Exception]] = []
        for folder in [first, *older]:
            try:
                ckpt.verify(folder)
                state = json.loads((folder / "trainer_state.json").read_text("utf-8"))
                if not isinstance(state, dict) or "step" not in state:
                    raise ckpt.CheckpointError(f"{folder / 'trainer_state.json'} has no step")
                tensors = ckpt.load_tensors(folder)
                opt_state = ckpt.load_optimizer_state(folder)
            except (ckpt.CheckpointError, OSError, ValueError) as e:
                problems.append((folder, e))
                continue
            if problems:
                bad = "; ".join(f"{p.name}: {e}" for p, e in problems)
                self._print(f"resume: checkpoint {first} is damaged ({bad}); falling back to {folder.name}, the "
                            f"newest checkpoint that verifies (the damaged folder is left as it is)")
                if self.dist.is_main and folder.parent == self.ckpt_dir:
                    self._point_back(folder, state)
            return folder, state, tensors, opt_state
        first_error = problems[0][1]
        others = "; ".join(f"{q.name}: {x}" for q, x in problems[1:])
        raise ckpt.CheckpointError(f"cannot resume: {first_error}" + (
            f" (and no older checkpoint in {self.ckpt_dir} verifies either: {others})" if others else
            f" (no older checkpoint in {self.ckpt_dir} to fall back to)"))

    def _point_back(self, folder: Path, state: dict) -> None:
        """After a fallback to ``folder``: LATEST names it, and BEST no longer names a newer (damaged) folder."""
        name = folder.name
        if name.endswith(".old"):
            return
        ckpt.set_pointer(self.ckpt_dir, ckpt.LATEST, name)
        best = ckpt.read_pointer(self.ckpt_dir, ckpt.BEST)
        if best is not None and (ckpt.step_of(Path(best)) or 0) > (ckpt.step_of(folder) or 0):
            best_step = state.get("best_step")
            candidate = f"step_{best_step:07d}" if isinstance(best_step, int) else None
            ok = candidate is not None and (self.ckpt_dir / candidate / ckpt.MANIFEST).exists()
            ckpt.set_pointer(self.ckpt_dir, ckpt.BEST, candidate if ok else name)

    def _load_model_and_optimizer(self, folder: Path, tensors: dict, opt_state: dict) -> None:
        if self.is_fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
            set_model_state_dict(self.task.model, tensors, options=opts)
            set_optimizer_state_dict(self.task.model, self.optimizer, opt_state, options=opts)
        else:
            ckpt.load_model_weights(self.task.model, tensors, str(folder))
            self.optimizer.load_state_dict(opt_state)

    # ---- signals -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGTERM/SIGINT: finish the optimizer step, save, report and stop (``stopped_because: signal``); a
        second signal exits at once (checkpoint writes are atomic, so that is safe too)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_signal is not None:
                self._print(f"{signal.Signals(signum).name} again: exiting now")
                os._exit(128 + signum)
            self.stop_signal = signum
            self._print(f"{signal.Signals(signum).name}: stopping after this optimizer step (a checkpoint is "
                        f"saved; continue with --resume). Send it again to exit at once.")

        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        with self._stop_on_signals():
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        self._build()
        self._maybe_resume()
        self._saved_at = time.monotonic()
        logger = MetricsLogger(self.out_dir, tensorboard=cfg.tensorboard, enabled=self.dist.is_main)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(self.run_config, indent=2,
                                                                 ensure_ascii=False) + "\n", "utf-8")
        peak = measure_matmul_peak(self.device, self.dtype) if self.flops_per_token else None
        self._print(f"device {self.device}, compute dtype {str(self.dtype).replace('torch.', '')}, "
                    f"compile {'on' if self.compiled else 'off'}, processes {self.dist.world_size}, "
                    f"global batch {self.global_batch_size} = {cfg.micro_batch_size} x {self.grad_accum} accum "
                    f"x {self.dist.world_size}" + (f", matmul peak {peak / 1e9:.0f} GFLOP/s" if peak else ""))
        bar = self._progress()
        stopped = "max_steps"
        window_tokens, window_time, window_loss, window_n = 0, 0.0, 0.0, 0
        if cfg.eval_at_start and self.step == 0:
            self._evaluate(logger)
        while self.step < cfg.max_steps:
            spent = cfg.max_time_s is not None and self.elapsed >= cfg.max_time_s  # e.g. resumed after the budget
            if dist_utils.broadcast_flag(spent, self.dist, self.device):
                stopped = "max_time_s"
                break
            t0 = time.perf_counter()
            loss, tokens, grad_norm, finite = self._train_step()
            dt = time.perf_counter() - t0
            self.elapsed += dt
            self.step += 1
            self._fit_horizon(dt)
            if not finite:
                self.bad_steps += 1
                self._print(f"step {self.step}: non-finite loss or gradient ({loss}); update skipped "
                            f"({self.bad_steps}/{cfg.max_bad_steps})")
                if self.bad_steps >= cfg.max_bad_steps:
                    raise TrainingDivergedError(
                        f"{self.bad_steps} consecutive non-finite losses at step {self.step}: training "
                        f"diverged. Lower train.lr or raise train.warmup_steps; the last good checkpoint "
                        f"in {self.ckpt_dir} was not overwritten")
            else:
                self.bad_steps = 0
                self.tokens_seen += tokens
                window_tokens += tokens
                window_time += dt
                window_loss += loss
                window_n += 1
            if bar is not None:
                bar.update(max(0.0, min(dt, bar.total - bar.n)) if self.time_bar else 1)
            if window_n and (self.step % cfg.log_interval == 0 or self.step == cfg.max_steps):
                tps = window_tokens / max(window_time, 1e-9)
                row = {"loss": window_loss / window_n, "lr": lr_at(self.step - 1, cfg, self.horizon),
                       "grad_norm": grad_norm, "tokens_per_s": tps, "tokens_seen": self.tokens_seen,
                       "elapsed_s": self.elapsed}
                if peak and self.flops_per_token:
                    row["mfu"] = self.flops_per_token * tps / (peak * self.dist.world_size)
                logger.log(self.step, row)
                if bar is not None:
                    bar.set_postfix(**({"step": self.step} if self.time_bar else {}), loss=f"{row['loss']:.4f}",
                                    tok_s=f"{tps:,.0f}", **({"mfu": f"{row['mfu']:.1%}"} if "mfu" in row else {}))
                window_tokens, window_time, window_loss, window_n = 0, 0.0, 0.0, 0
            out_of_time = cfg.max_time_s is not None and self.elapsed >= cfg.max_time_s
            out_of_time = dist_utils.broadcast_flag(out_of_time, self.dist, self.device)
            last = self.step >= cfg.max_steps or out_of_time
            stop_early = False
            if cfg.eval_interval and (self.step % cfg.eval_interval == 0 or last):
                stop_early = self._evaluate(logger)
            # a signal stops at this step boundary; the checkpoint is what an uninterrupted run holds here (no
            # extra evaluation), so --resume continues bit-identically
            signalled = dist_utils.broadcast_flag(self.stop_signal is not None, self.dist, self.device)
            # a time-based save too: on a shared or slow machine save_interval steps can take far longer than
            # planned, and a sitting that ends loses everything since the last checkpoint
            overdue = cfg.save_interval_s is not None and time.monotonic() - self._saved_at >= cfg.save_interval_s
            overdue = dist_utils.broadcast_flag(overdue, self.dist, self.device)
            if self.step % cfg.save_interval == 0 or last or stop_early or signalled or overdue:
                self._save()
            if signalled and not last and not stop_early:
                stopped = "signal"
                self._print(f"stopped by {signal.Signals(self.stop_signal or signal.SIGTERM).name} at step "
                            f"{self.step}; checkpoint {self.ckpt_dir / f'step_{self.step:07d}'} saved, continue "
                            f"with --resume")
                break
            if out_of_time:
                stopped = "max_time_s"
                break
            if stop_early:
                stopped = "early_stopping"
                break
        if bar is not None:
            bar.close()
        if stopped != "signal" and (not self.last_eval or self.last_eval.get("step") != self.step):
            if cfg.eval_interval:
                self._evaluate(logger)
            self._save()
        model_dir = self._export_final()
        logger.close()
        dist_utils.barrier(self.dist)
        return TrainResult(step=self.step, out_dir=self.out_dir, model_dir=model_dir,
                           best_metric=self.best_metric, best_step=self.best_step, last_eval=self.last_eval,
                           stopped_because=stopped, train_seconds=self.elapsed,
                           stop_signal=self.stop_signal if stopped == "signal" else None)

    def _fit_horizon(self, dt: float) -> None:
        """With a time budget and no explicit decay_steps, time a few steps (after the first, which
        compiles) and end the LR decay where the budget will run out. Refitted every
        ``10 x budget_calibration_steps`` steps from the mean step time since the last fit, so slower steps
        later on (longer batches, a busier machine) still end the decay at the budget, not before it is
        reached; the horizon is checkpointed."""
        cfg = self.cfg
        if cfg.max_time_s is None or cfg.decay_steps is not None or self.step == 1:
            return
        if self.horizon is not None:
            if self._refit_from is None:  # resumed: measure from here
                self._refit_from = (self.step, self.elapsed)
            elif self.step - self._refit_from[0] >= 10 * cfg.budget_calibration_steps:
                steps, secs = self.step - self._refit_from[0], self.elapsed - self._refit_from[1]
                self._set_horizon(secs / steps)
            return
        self._calib.append(dt)
        if len(self._calib) < cfg.budget_calibration_steps:
            return
        per_step = sorted(self._calib)[len(self._calib) // 2]
        self._set_horizon(per_step)
        self._print(f"time budget: {per_step:.2f} s/step -> learning-rate decay ends at step {self.horizon}")

    def _set_horizon(self, per_step: float) -> None:
        cfg = self.cfg
        remaining = max(0.0, cfg.max_time_s - self.elapsed)
        fitted = dist_utils.broadcast_int(self.step + int(remaining / per_step), self.dist, self.device)
        self.horizon = min(cfg.max_steps, max(self.step + 1, fitted))
        self._refit_from = (self.step, self.elapsed)

    def _train_step(self) -> tuple[float, int, float, bool]:
        cfg = self.cfg
        lr = lr_at(self.step, cfg, self.horizon)
        for group in self.optimizer.param_groups:
            group["lr"] = group_lr(lr, group, self.step, cfg)
        batches = self.task.micro_batches(self.step, self.grad_accum, cfg.micro_batch_size,
                                          self.dist.rank, self.dist.world_size)
        batches = [{k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}
                   for b in batches]
        # Normalise by the global count of loss units so accumulation and processes weigh every token alike.
        counts = torch.tensor([float(sum(_count(b) for b in batches))], device=self.device)
        total = dist_utils.all_reduce_sum(counts, self.dist).item()
        loss_sum = torch.zeros((), device=self.device)
        tokens = 0
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            ctx = self.wrapped.no_sync() if (self.dist.enabled and not sync and hasattr(self.wrapped, "no_sync")) \
                else contextlib.nullcontext()
            with ctx, autocast(self.device, self.dtype):
                s, _ = self.runner(batch)
            (s * (self.dist.world_size / max(total, 1.0))).backward()
            loss_sum += s.detach().float()
            tokens += self.task.batch_tokens(batch)
        dist_utils.all_reduce_sum(loss_sum, self.dist)
        loss = (loss_sum / max(total, 1.0)).item()
        params = [p for p in self.task.model.parameters() if p.grad is not None]
        if cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, tokens * self.dist.world_size, grad_norm, finite

    # ---- evaluation, checkpoints ---------------------------------------------------------------
    def _evaluate(self, logger: MetricsLogger) -> bool:
        """Evaluate, track the best metric; return True when early stopping says stop."""
        cfg = self.cfg
        self.task.model.eval()
        with torch.no_grad(), autocast(self.device, self.dtype):
            metrics = self.task.evaluate(self.task.model, cfg.eval_batches)
        self.task.model.train()
        metrics = {k: float(v) for k, v in metrics.items()}
        self.last_eval = {**metrics, "step": self.step}
        logger.log(self.step, metrics, kind="eval")
        self._print(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        value = metrics.get(cfg.best_metric)
        if value is None:
            return False
        better = self.best_metric is None or (value < self.best_metric if cfg.best_mode == "min"
                                              else value > self.best_metric)
        if better:
            self.best_metric, self.best_step = value, self.step
            self.evals_without_improvement = 0
            self._save(best=True)
        else:
            self.evals_without_improvement += 1
        stop = cfg.early_stopping_patience > 0 and self.evals_without_improvement >= cfg.early_stopping_patience
        return dist_utils.broadcast_flag(stop, self.dist, self.device)

    def _full_state(self) -> tuple[dict, dict]:
        if self.is_fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_sd = get_model_state_dict(self.task.model, options=opts)
            opt_sd = get_optimizer_state_dict(self.task.model, self.optimizer, options=opts)
            return ckpt.model_state_from_dict(model_sd, self.task.model), opt_sd
        return ckpt.model_state(self.task.model), self.optimizer.state_dict()

    def _save(self, best: bool = False) -> None:
        self._saved_at = time.monotonic()
        folder_name = f"step_{self.step:07d}"
        if self._saved_step == self.step:  # this step is on disk already (a best save on a save step)
            if self.dist.is_main:
                ckpt.set_pointer(self.ckpt_dir, ckpt.BEST if best else ckpt.LATEST, folder_name)
            return
        model_sd, opt_sd = self._full_state()
        rngs = dist_utils.all_gather_object(_rng_state(), self.dist)
        if self.dist.is_main:
            state = {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
                     "best_metric": self.best_metric, "best_step": self.best_step,
                     "evals_without_improvement": self.evals_without_improvement, "horizon": self.horizon,
                     "last_eval": self.last_eval, "world_size": self.dist.world_size, "rng": rngs,
                     "data_position": {"step": self.step, "seed": self.cfg.seed}}
            try:
                ckpt.save_checkpoint(self.ckpt_dir / folder_name, model_tensors=model_sd, config=self.run_config,
                                     tokenizer=self.tokenizer, optimizer_state=opt_sd, trainer_state=state)
                ckpt.set_pointer(self.ckpt_dir, ckpt.LATEST, folder_name)
                if best:
                    ckpt.set_pointer(self.ckpt_dir, ckpt.BEST, folder_name)
            except (ckpt.CheckpointSaveError, OSError) as e:
                # stop cleanly: the previous checkpoint is intact and LATEST still names it
                kept = ckpt.read_pointer(self.ckpt_dir, ckpt.LATEST)
                if isinstance(e, OSError):
                    from .fsutil import describe_os_error

                    e = ckpt.CheckpointSaveError(f"could not write checkpoint {self.ckpt_dir / folder_name}: "
                                                 f"{describe_os_error(e)}; the previous checkpoint is unchanged")
                raise ckpt.CheckpointSaveError(
                    f"{e}. Training stopped at step {self.step}: "
                    + (f"the last good checkpoint is {self.ckpt_dir / kept}; once the problem is fixed, continue "
                       f"from it with --resume" if kept else "no checkpoint was saved yet") ) from e
            ckpt.prune(self.ckpt_dir, self.cfg.keep_last)
        self._saved_step = self.step
        dist_utils.barrier(self.dist)

    def _export_final(self) -> Path:
        """``out_dir/model``: the best (else last) weights with config and tokenizer, ready for --model; with
        ``average_last``, the average of the last checkpoints instead when it scores better on validation."""
        target = self.out_dir / "model"
        if self.dist.is_main:
            name = ckpt.read_pointer(self.ckpt_dir, ckpt.BEST) or ckpt.read_pointer(self.ckpt_dir, ckpt.LATEST)
            source = self.ckpt_dir / name
            tmp = self.out_dir / ".model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for f in source.iterdir():
                if f.name not in ("optimizer.safetensors", "optimizer.json", "trainer_state.json", ckpt.MANIFEST):
                    shutil.copy2(f, tmp / f.name)
            tensors = ckpt.load_tensors(tmp)
            origin = {"checkpoint": str(source), "step": int(name[5:])}
            averaged = self._averaged() if self.cfg.average_last and not self.is_fsdp else None
            if averaged is not None:
                tensors, origin = averaged
            ckpt.save_checkpoint(target, model_tensors=tensors, config=ckpt.read_config(tmp),
                                 tokenizer=self.tokenizer, extra_files={"source.json": origin})
            shutil.rmtree(tmp, ignore_errors=True)
        dist_utils.barrier(self.dist)
        return target

    def _averaged(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The mean weights of the last ``average_last`` checkpoints and where they came from, when they score
        better on validation than the best single checkpoint (else None; either way the comparison is printed
        and logged). Averaging the end of a run smooths the noise of its last steps (Vaswani et al. 2017)."""
        cfg = self.cfg
        names = sorted(p.name for p in self.ckpt_dir.iterdir() if p.name.startswith("step_"))[-cfg.average_last:]
        if len(names) < 2 or self.best_metric is None:
            return None
        total: dict[str, torch.Tensor] = {}
        for n in names:
            for k, t in ckpt.load_tensors(self.ckpt_dir / n).items():
                total[k] = total[k] + t.double() if k in total else t.double()
        own = ckpt.model_state(self.task.model)
        mean = {k: (v / len(names)).to(own[k].dtype) for k, v in total.items()}
        kept = {k: v.clone() for k, v in own.items()}
        model = self.task.model
        try:
            ckpt.load_model_weights(model, mean, "averaged checkpoints")
            model.eval()
            with torch.no_grad(), autocast(self.device, self.dtype):
                value = float(self.task.evaluate(model, cfg.eval_batches)[cfg.best_metric])
        finally:
            ckpt.load_model_weights(model, kept, "the run's weights")
        better = value < self.best_metric if cfg.best_mode == "min" else value > self.best_metric
        self._print(f"average of {len(names)} checkpoints ({names[0]} .. {names[-1]}): {cfg.best_metric} "
                    f"{value:.4f} against the best single checkpoint's {self.best_metric:.4f} (step "
                    f"{self.best_step}): {'the average' if better else 'the best checkpoint'} is exported")
        if not better:
            return None
        return mean, {"averaged": names, "steps": [int(n[5:]) for n in names], cfg.best_metric: value,
                      "best_single": {"step": self.best_step, cfg.best_metric: self.best_metric}}

    # ---- output --------------------------------------------------------------------------------
    def _progress(self):
        if not (self.cfg.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        if self.time_bar:  # the budget, not a step total the run will never reach, sets the total and the ETA
            return tqdm(total=round(self.cfg.max_time_s), initial=round(self.elapsed), desc="train (time budget)",
                        unit="s", dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                        "{n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        return tqdm(total=self.cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    @property
    def time_bar(self) -> bool:
        """A run bounded by ``max_time_s`` counts seconds of its budget; a run bounded by steps, steps."""
        return self.cfg.max_time_s is not None

    def _print(self, msg: str) -> None:
        if self.dist.is_main:
            from tqdm.auto import tqdm

            tqdm.write(msg)


def _count(batch: dict) -> int:
    if "count" in batch:
        c = batch["count"]
        return int(c.item() if torch.is_tensor(c) else c)
    if "targets" in batch:
        return int((batch["targets"] != -100).sum().item())
    raise KeyError("a batch must carry 'count' or 'targets' so the loop can weigh it")


def without_defaults(model_config: dict) -> dict:
    """A saved decoder config without the fields at their defaults: a checkpoint written before a field
    existed (it lacks ``copy_dim``) then compares equal to a run that has the field at its default."""
    defaults = {f.name: f.default for f in fields(ModelConfig) if f.default is not MISSING}
    return {k: v for k, v in model_config.items() if not (k in defaults and v == defaults[k])}


def _dict_diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diffs[:5])


def config_dict(**sections: Any) -> dict:
    """Resolved config as a plain dict (dataclasses -> dicts)."""
    from ..config import to_dict

    return {k: (to_dict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in sections.items()}
