"""Knowledge distillation as a Task of the shared training loop.

:class:`DistillTask` wraps the task the student would be trained with anyway (``LMTask``, ``ClassifyTask``,
``Seq2SeqTask``): the same rows, batches, resume position and validation metrics. To each micro-batch it
adds what the frozen teacher computes on it (eval mode, no gradient): ``teacher_logits`` and, for
hidden-state matching, ``teacher_hidden``. :class:`DistillLoss` then returns, summed over the task's loss
units (tokens, or rows for classification)::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))      soft targets (Hinton et al. 2015)
    + (1 - alpha) * cross-entropy(student, labels)                      the task's own (hard) loss
    + beta * mean over layer pairs of |P h_student - h_teacher|^2 / |h_teacher|^2     (optional)

The units are the task's: every token for language modelling, the target tokens only for seq2seq (the
same -100 mask as its hard loss), every labelled row for classification (whose hidden-state term averages
the row's real tokens). ``P`` is a learned linear map when the widths differ (identity otherwise); it lives
in :class:`DistillStudent` beside the student, so the loop trains and checkpoints it, and it is dropped
when the student is exported.

Classification with ``beta == 0``: the teacher's logits for every training row are computed once, in a
fixed order, the first time batches are asked for (the teacher is frozen and has no dropout, so they are a
function of the row); later epochs and resumed runs read them back instead of running the teacher again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .classify import collate

KINDS = ("lm", "classify", "seq2seq")


@dataclass
class DistillLossConfig:
    alpha: float = 0.5  # weight of the soft-target term; 1 - alpha goes to the task's hard-label loss
    temperature: float = 2.0  # softens both distributions; the soft term is scaled by T^2 (Hinton et al.)
    beta: float = 0.0  # weight of hidden-state matching; 0 = off
    # "student:teacher" block pairs whose outputs (the residual stream) are matched, e.g. ["0:1", "2:5"];
    # negative indices count from the end. Empty: each student block with the teacher block it was copied
    # from (teacher-layers students), else with the evenly spaced one (student i -> teacher (i+1)*Lt/Ls - 1).
    layers: list[str] = field(default_factory=list)
    # classification: compute the teacher's logits of the training rows once (auto: when beta == 0)
    cache_teacher: Literal["auto", "on", "off"] = "auto"

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distill.alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be positive, got {self.temperature}")
        if self.beta < 0:
            raise ValueError(f"distill.beta must be >= 0, got {self.beta}")
        if self.cache_teacher == "on" and self.beta > 0:
            raise ValueError("distill.cache_teacher=on caches logits only; hidden-state matching (beta > 0) needs "
                             "the teacher on every batch: use cache_teacher auto or off")


# ------------------------------------------------------------------------------------------------ losses
def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student) at temperature T, per unit (summed over the last dimension only).

    Zero when the logits are equal (or differ by a constant per unit); the gradient flows to the student only."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    return (t * t) * F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)


def hidden_state_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """|s - t|^2 / |t|^2 per position: scale-free (1.0 = predicting zeros), so beta means the same whatever
    the size of the teacher's residual stream."""
    t = teacher_hidden.detach().float()
    return (student_hidden.float() - t).pow(2).sum(-1) / t.pow(2).sum(-1).clamp(min=1e-6)


# ------------------------------------------------------------------------------------------------ modules
def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Transformer or of a SequenceClassifier (its backbone's)."""
    backbone = getattr(model, "backbone", model)
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no transformer blocks: hidden-state matching needs a "
                         f"decoder teacher and student (set distill.beta 0 for logit distillation only)")
    return layers


def layer_pairs(spec: list[str], n_student: int, n_teacher: int,
                copied_from: list[int] | None = None) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs from ``"s:t"`` strings, or the default mapping."""
    if not spec:
        if copied_from is not None:
            return list(enumerate(copied_from))
        return [(i, max(0, round((i + 1) * n_teacher / n_student) - 1)) for i in range(n_student)]
    pairs = []
    for item in spec:
        s, sep, t = str(item).partition(":")
        try:
            i, j = int(s), int(t)
        except ValueError:
            raise ValueError(f"distill.layers: {item!r} is not 'student:teacher' block indices") from None
        if not sep or not -n_student <= i < n_student or not -n_teacher <= j < n_teacher:
            raise ValueError(f"distill.layers: {item!r} is out of range (student has {n_student} blocks, "
                             f"teacher {n_teacher})")
        pairs.append((i % n_student, j % n_teacher))
    return pairs


class LayerTap:
    """Forward hooks that keep the output of chosen blocks (the residual stream after each)."""

    def __init__(self, blocks: nn.ModuleList, indices) -> None:
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = [blocks[i].register_forward_hook(self._hook(i)) for i in sorted(set(indices))]

    def _hook(self, i: int):
        def hook(module, args, output):
            self.outputs[i] = output
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class DistillStudent(nn.Module):
    """What the loop trains and checkpoints: the student and the hidden-state projections.

    ``projections["s_t"]`` maps student block s's output to teacher block t's width (absent = identity).
    Only ``student`` is exported (``student_state``)."""

    def __init__(self, student: nn.Module, projections: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict(projections or {})

    def project(self, s: int, t: int, hidden: torch.Tensor) -> torch.Tensor:
        key = f"{s}_{t}"
        return self.projections[key](hidden) if key in self.projections else hidden


def make_projections(pairs, student_width: int, teacher_width: int,
                     init: torch.Tensor | None = None) -> dict[str, nn.Module]:
    """A bias-free Linear(student_width -> teacher_width) per pair when the widths differ; ``init`` is its
    weight (teacher_width, student_width), e.g. the PCA basis the student's embedding was projected on."""
    if student_width == teacher_width:
        return {}
    out = {}
    for s, t in pairs:
        lin = nn.Linear(student_width, teacher_width, bias=False)
        if init is not None:
            with torch.no_grad():
                lin.weight.copy_(init)
        out[f"{s}_{t}"] = lin
    return out


class DistillLoss(nn.Module):
    """forward(batch) -> (summed distillation loss, number of loss units), as every task loss."""

    def __init__(self, model: DistillStudent, kind: str, cfg: DistillLossConfig, pairs: list[tuple[int, int]],
                 class_weights=None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.kind, self.cfg, self.pairs = model, kind, cfg, pairs
        self.label_smoothing = label_smoothing
        if class_weights is not None:
            self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float32))
        else:
            self.class_weights = None
        self.tap = LayerTap(transformer_blocks(model.student), [s for s, _ in pairs]) if cfg.beta > 0 else None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        student, cfg = self.model.student, self.cfg
        if self.kind == "classify":
            logits = student(batch["idx"], batch.get("attention_mask"))  # (B, K)
            labels = batch["labels"]
            units = labels != -100
            hard = F.cross_entropy(logits.float(), labels, weight=self.class_weights, ignore_index=-100,
                                   reduction="none", label_smoothing=self.label_smoothing)
        else:
            kw = {k: batch[k] for k in ("position_ids", "mask") if k in batch}
            logits = student.logits(batch["idx"], **kw)  # (B, T, V)
            targets = batch["targets"]
            units = targets != -100  # seq2seq: the target tokens only
            hard = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                                   reduction="none").view_as(targets)
        w = units.float()
        loss = (1.0 - cfg.alpha) * (hard * w).sum()
        if cfg.alpha > 0:
            soft = soft_target_loss(logits, batch["teacher_logits"], cfg.temperature)
            loss = loss + cfg.alpha * (soft * w).sum()
        if self.tap is not None:
            loss = loss + cfg.beta * self._hidden(batch, w)
        return loss, units.sum()

    def _hidden(self, batch, unit_weight: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=unit_weight.device)
        for p, (s, t) in enumerate(self.pairs):
            err = hidden_state_loss(self.model.project(s, t, self.tap.outputs[s]), batch["teacher_hidden"][p])
            if self.kind == "classify":  # per row: the mean over its real tokens
                real = batch["attention_mask"].float() if "attention_mask" in batch else torch.ones_like(err)
                per_row = (err * real).sum(1) / real.sum(1).clamp(min=1)
                total = total + (per_row * unit_weight).sum()
            else:
                total = total + (err * unit_weight).sum()
        return total / len(self.pairs)


# ------------------------------------------------------------------------------------------------ the task
def _row_key(row: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row, dtype=np.int64).tobytes(), digest_size=16).digest()


def _with(batch: dict, **kw) -> dict:
    return {**batch, **kw}


class DistillTask:
    """``inner``'s data and metrics; the teacher's outputs added to every batch; the distillation loss.

    kind: ``lm`` | ``classify`` | ``seq2seq`` (the inner task's). ``model`` is the DistillStudent."""

    def __init__(self, inner, teacher: nn.Module, model: DistillStudent, *, kind: str, cfg: DistillLossConfig,
                 pairs: list[tuple[int, int]] | None = None, class_weights=None, label_smoothing: float = 0.0,
                 log=print) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown distillation kind {kind!r}; choose one of {KINDS}")
        cfg.validate()
        if cfg.beta > 0 and not pairs:
            raise ValueError("hidden-state matching (distill.beta > 0) needs at least one layer pair")
        self.inner, self.teacher, self.model, self.kind, self.cfg = inner, teacher, model, kind, cfg
        self.pairs = list(pairs or []) if cfg.beta > 0 else []
        self.class_weights, self.label_smoothing = class_weights, label_smoothing
        self.log = log
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher_tap = LayerTap(transformer_blocks(teacher), [t for _, t in self.pairs]) if self.pairs else None
        self.cache = kind == "classify" and (cfg.cache_teacher == "on"
                                             or (cfg.cache_teacher == "auto" and cfg.beta == 0))
        self._train_logits: dict[bytes, np.ndarray] | None = None
        self._val_logits: np.ndarray | None = None

    # what the loop asks for
    def loss_module(self) -> nn.Module:
        return DistillLoss(self.model, self.kind, self.cfg, self.pairs, self.class_weights, self.label_smoothing)

    def batch_tokens(self, batch) -> int:
        return self.inner.batch_tokens(batch)

    def micro_batches(self, step, n_micro, micro_batch_size, rank, world_size):
        batches = self.inner.micro_batches(step, n_micro, micro_batch_size, rank, world_size)
        return [self._with_teacher(b) for b in batches]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int) -> dict[str, float]:
        """The inner task's validation metrics for the student, plus ``val_kl`` (KL(teacher || student) at
        T = 1 per unit) and ``val_agreement`` (how often the student's top-1 is the teacher's)."""
        student = model.student if isinstance(model, DistillStudent) else model
        metrics = dict(self.inner.evaluate(student, max_batches))
        kl, agree, n = (self._eval_classify if self.kind == "classify" else self._eval_tokens)(student, max_batches)
        if n:
            metrics.update(val_kl=kl / n, val_agreement=agree / n)
        return metrics

    # the teacher
    def _device(self) -> torch.device:
        device = next(self.model.parameters()).device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return device

    @torch.no_grad()
    def _with_teacher(self, batch: dict) -> dict:
        device = self._device()
        if self.kind == "classify" and self.cache:
            return _with(batch, teacher_logits=self._cached_logits(batch))
        on = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.kind == "classify":
            logits = self.teacher(on["idx"], on.get("attention_mask"))
        else:
            kw = {k: on[k] for k in ("position_ids", "mask") if k in on}
            logits = self.teacher.logits(on["idx"], **kw)
        out = _with(batch, teacher_logits=logits.float())
        if self.teacher_tap is not None:
            out["teacher_hidden"] = torch.stack([self.teacher_tap.outputs[t].float() for _, t in self.pairs])
        return out

    @torch.no_grad()
    def _classifier_logits(self, model: nn.Module, rows) -> np.ndarray:
        """Logits (n, k) of a classifier for token rows, batched by length in a fixed order."""
        device = next(model.parameters()).device
        order = np.argsort([-len(r) for r in rows], kind="stable")
        out = None
        bs = getattr(self.inner, "eval_batch_size", 32)
        for lo in range(0, len(rows), bs):
            sel = order[lo:lo + bs]
            idx, mask = collate([rows[i] for i in sel], self.inner.pad_id)
            logits = model(idx.to(device), mask.to(device)).float().cpu().numpy()
            if out is None:
                out = np.empty((len(rows), logits.shape[1]), dtype=np.float32)
            out[sel] = logits
        return out

    def _cached_logits(self, batch: dict) -> torch.Tensor:
        if self._train_logits is None:
            rows = self.inner.train_rows
            self.log(f"distill: teacher logits of the {len(rows):,} training rows (once; later epochs and "
                     f"resumed runs reuse them)")
            logits = self._classifier_logits(self.teacher, rows)
            self._train_logits = {_row_key(r): logits[i] for i, r in enumerate(rows)}
        idx, mask = batch["idx"].numpy(), batch["attention_mask"].numpy()
        keys = [_row_key(idx[r, :int(mask[r].sum())]) for r in range(len(idx))]
        return torch.from_numpy(np.stack([self._train_logits[k] for k in keys]))

    # validation
    def _eval_classify(self, student, max_batches) -> tuple[float, float, int]:
        rows = self.inner.val_rows
        if not len(rows):
            return 0.0, 0.0, 0
        self._device()
        if self._val_logits is None:
            self._val_logits = self._classifier_logits(self.teacher, rows)
        n = len(rows) if not max_batches else min(len(rows), max_batches * self.inner.eval_batch_size)
        s = torch.from_numpy(self._classifier_logits(student, rows[:n]))
        t = torch.from_numpy(self._val_logits[:n])
        kl = soft_target_loss(s, t, 1.0).sum().item()
        return kl, float((s.argmax(1) == t.argmax(1)).sum()), n

    def _eval_tokens(self, student, max_batches) -> tuple[float, float, int]:
        device = self._device()
        kl = agree = 0.0
        n = 0
        for b in self._val_batches(max_batches):
            b = {k: v.to(device) for k, v in b.items()}
            kw = {k: b[k] for k in ("position_ids", "mask") if k in b}
            s, t = student.logits(b["idx"], **kw), self.teacher.logits(b["idx"], **kw)
            w = (b["targets"] != -100).float()
            kl += (soft_target_loss(s, t, 1.0) * w).sum().item()
            agree += ((s.argmax(-1) == t.argmax(-1)).float() * w).sum().item()
            n += int(w.sum())
        return kl, agree, n

    def _val_batches(self, max_batches):
        """The batches the inner task validates on: LM windows, or seq2seq examples one per row."""
        inner = self.inner
        if self.kind == "lm":
            bs = 16
            starts = inner.val_windows(max_batches * bs if max_batches else None)
            for lo in range(0, len(starts), bs):
                yield inner._windows(inner.val.tokens, starts[lo:lo + bs])
            return
        from .seq2seq import packed_batch

        val = inner.val
        bs = inner.eval_batch_size
        n = len(val) if not max_batches else min(len(val), max_batches * bs)
        order = np.argsort([-len(e) for e in val[:n]], kind="stable")
        for lo in range(0, n, bs):
            b = packed_batch(val, [[int(i)] for i in order[lo:lo + bs]], inner.block_size, inner.pad_id)
            yield {"idx": b["idx"], "targets": b["targets"]}
