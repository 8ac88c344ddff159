"""Sequence classification as a Task of the shared training loop, plus batched prediction.

Texts become ``<|eos|> text <|eos|>`` (the document boundary the decoder saw in pretraining, on both
sides, so the last position - where "last" pooling reads - is always the same token). A text longer than
the context keeps its head and its tail (``head_fraction`` of the budget from the start, the rest from
the end; Sun et al. 2019 found head+tail best for long IMDb reviews).

Batches are right-padded to the longest row of the micro-batch (rounded up to ``pad_multiple``); rows of
similar length are grouped (a seeded "sortish" order: shuffle, sort within pools of 64 global batches,
shuffle the batches), which cuts the padding to a few percent. As in :class:`~scratchlm.tasks.lm.LMTask`,
the rows of step ``s`` are a pure function of (seed, s), so any split into processes and accumulation steps
sees the same rows and a resumed run continues exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.heads import SequenceClassifier, pool
from .metrics import classification_metrics

POOL_BATCHES = 64  # global batches per length-sorting pool


def truncate_head_tail(ids: Sequence[int], max_tokens: int, head_fraction: float = 0.25) -> list[int]:
    """``ids`` unchanged when it fits, else its first ``round(max_tokens * head_fraction)`` tokens and
    the last ones filling the rest."""
    ids = list(ids)
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if len(ids) <= max_tokens:
        return ids
    head = int(round(max_tokens * head_fraction))
    tail = max_tokens - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


def encode_texts(tokenizer, texts: Sequence[str], max_length: int, head_fraction: float = 0.25,
                 ) -> tuple[list[np.ndarray], int]:
    """Token rows ``[eos] + text + [eos]`` of at most ``max_length`` tokens, and how many were cut."""
    eos = tokenizer.eos_id
    if eos is None:
        raise ValueError("the tokenizer has no <|eos|> token")
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3, got {max_length}")
    budget = max_length - 2
    rows, cut = [], 0
    for ids in tokenizer.encode_batch(list(texts)):
        if len(ids) > budget:
            cut += 1
            ids = truncate_head_tail(ids, budget, head_fraction)
        rows.append(np.asarray([eos, *ids, eos], dtype=np.int64))
    return rows, cut


def collate(rows: Sequence[np.ndarray], pad_id: int, pad_multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``idx`` (B, T) and ``attention_mask`` (B, T), 1 = real token."""
    T = max(len(r) for r in rows)
    if pad_multiple > 1:
        T = int(math.ceil(T / pad_multiple) * pad_multiple)
    idx = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return torch.from_numpy(idx), torch.from_numpy(mask)


def length_grouped_order(lengths: np.ndarray, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's row order in whole batches of ``global_batch`` rows: a seeded shuffle, sorted by length within
    pools of POOL_BATCHES batches, batches in a seeded random order (the remainder that does not fill a
    batch is left out; fewer rows than a batch are repeated)."""
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    perm = rng.permutation(len(lengths))
    n = max(1, len(lengths) // global_batch) * global_batch
    if len(perm) < global_batch:
        perm = np.resize(perm, global_batch)
    batches = []
    for lo in range(0, n, global_batch * POOL_BATCHES):
        chunk = perm[lo:min(lo + global_batch * POOL_BATCHES, n)]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + global_batch] for i in range(0, len(chunk), global_batch)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


class WeightedClassificationLoss(nn.Module):
    """forward(batch) -> (summed, optionally class-weighted cross-entropy, number of rows).

    With class weights normalised so that their mean over the training rows is 1 (``balanced`` is), the
    loop's division by the row count keeps the loss scale of the unweighted case."""

    def __init__(self, model: nn.Module, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        if class_weights is not None:
            self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float32))
        else:
            self.class_weights = None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["idx"], batch.get("attention_mask"))
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weights, ignore_index=-100,
                               reduction="sum", label_smoothing=self.label_smoothing)
        return loss, (labels != -100).sum()


def balanced_weights(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """sklearn's ``class_weight='balanced'``: n / (k * n_c); mean 1 over the rows."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 0.0)


class LengthGroupedBatches:
    """A task's batching by length: whole global batches of rows of similar length, in a seeded random order
    per epoch, so a micro-batch's rows depend on (seed, step) alone, not on accumulation or the number of
    processes. The task sets ``lengths`` (one per training row), ``seed`` and ``_plan = None``."""

    lengths: np.ndarray
    seed: int
    _plan: tuple[int, int, np.ndarray] | None  # (epoch, global batch, order)

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, len(self.lengths) // global_batch)

    def _epoch_order(self, epoch: int, global_batch: int) -> np.ndarray:
        """Row order of one epoch: whole global batches of similar lengths, in a seeded random order."""
        if self._plan is None or self._plan[:2] != (epoch, global_batch):
            self._plan = (epoch, global_batch, length_grouped_order(self.lengths, global_batch, self.seed, epoch))
        return self._plan[2]

    def micro_rows(self, step: int, n_micro: int, micro_batch_size: int, rank: int,
                   world_size: int) -> list[np.ndarray]:
        """The training rows of this process's ``n_micro`` micro-batches at ``step``."""
        global_batch = n_micro * micro_batch_size * world_size
        epoch, pos = divmod(step, self.steps_per_epoch(global_batch))
        rows = self._epoch_order(epoch, global_batch)[pos * global_batch:(pos + 1) * global_batch]
        starts = [(m * world_size + rank) * micro_batch_size for m in range(n_micro)]
        return [rows[lo:lo + micro_batch_size] for lo in starts]


class ClassifyTask(LengthGroupedBatches):
    """Labelled token rows -> micro-batches of ``idx``/``attention_mask``/``labels`` for the Trainer."""

    def __init__(self, model: nn.Module, train_rows: list[np.ndarray], train_labels: np.ndarray,
                 val_rows: list[np.ndarray], val_labels: np.ndarray, *, num_labels: int, pad_id: int,
                 seed: int = 1337, class_weights=None, label_smoothing: float = 0.0, pad_multiple: int = 16,
                 eval_batch_size: int = 32) -> None:
        if len(train_rows) != len(train_labels) or len(val_rows) != len(val_labels):
            raise ValueError("rows and labels differ in length")
        if not train_rows:
            raise ValueError("no training examples")
        self.model = model
        self.train_rows, self.train_labels = train_rows, np.asarray(train_labels, dtype=np.int64)
        self.val_rows, self.val_labels = val_rows, np.asarray(val_labels, dtype=np.int64)
        self.lengths = np.array([len(r) for r in train_rows])
        self.num_labels = num_labels
        self.pad_id = pad_id
        self.seed = seed
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.pad_multiple = pad_multiple
        self.eval_batch_size = eval_batch_size
        self._plan: tuple[int, int, np.ndarray] | None = None  # (epoch, global batch, order)

    def loss_module(self) -> nn.Module:
        return WeightedClassificationLoss(self.model, self.class_weights, self.label_smoothing)

    def micro_batches(self, step, n_micro, micro_batch_size, rank, world_size):
        out = []
        for sel in self.micro_rows(step, n_micro, micro_batch_size, rank, world_size):
            idx, mask = collate([self.train_rows[i] for i in sel], self.pad_id, self.pad_multiple)
            out.append({"idx": idx, "attention_mask": mask, "labels": torch.from_numpy(self.train_labels[sel]),
                        "count": len(sel)})
        return out

    def batch_tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int) -> dict[str, float]:
        rows, labels = self.val_rows, self.val_labels
        if max_batches and max_batches * self.eval_batch_size < len(rows):
            # A seeded sample, the same at every evaluation, not the first rows: a carved validation set keeps
            # the file's order, and IMDb's file is sorted by label (its first 1,280 rows were 96% negative)
            sample = np.sort(np.random.Generator(np.random.PCG64(self.seed)).permutation(len(rows))
                             [:max_batches * self.eval_batch_size])
            rows, labels = [rows[i] for i in sample], labels[sample]
        probs = predict_proba(model, rows, self.pad_id, batch_size=self.eval_batch_size)
        m = classification_metrics(labels, probs.argmax(1), list(range(self.num_labels)))
        nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
        return {"val_loss": float(nll), "val_accuracy": m["accuracy"], "val_f1": m["f1_macro"],
                "val_precision": m["precision_macro"], "val_recall": m["recall_macro"]}


# A pass over this many texts compiles the classifier's transformer body first (dynamic shapes: one compile for
# every batch length). It costs ~5-15 s and gains a few percent, so only long passes (a 25k-review test set) use it.
COMPILE_MIN_TEXTS = 4000


def _fast_body(model: nn.Module, n_rows: int):
    """A compiled forward of ``model``'s backbone for long passes, or None (short pass, not a decoder classifier,
    or compile unavailable: the eager model gives the same probabilities)."""
    if n_rows < COMPILE_MIN_TEXTS or type(model) is not SequenceClassifier:
        return None
    try:
        return torch.compile(model.backbone, dynamic=True)
    except Exception:  # noqa: BLE001 -- no compiler or backend here
        return None


@torch.no_grad()
def predict_proba(model: nn.Module, rows: Sequence[np.ndarray], pad_id: int, *, batch_size: int = 32,
                  progress: bool = False, desc: str = "classify", stats: dict | None = None) -> np.ndarray:
    """Class probabilities (n, k) in the order of ``rows``; rows are batched by length (less padding).

    ``stats`` (a dict) receives the pass's tokens, seconds, tokens/s and forward GFLOP/s (decoder classifiers)."""
    if len(rows) == 0:
        return np.zeros((0, getattr(model, "num_labels", 0)), dtype=np.float32)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([-len(r) for r in rows], kind="stable")
    backbone = getattr(model, "backbone", None)
    flops_of = (lambda n: backbone.flops_per_token(n, lm_head=False) / 3 * n) if backbone is not None else None
    body = _fast_body(model, len(rows))
    out: np.ndarray | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc=desc, unit="text", dynamic_ncols=True)
    tokens, flops, t0 = 0, 0.0, time.perf_counter()
    for lo in range(0, len(rows), batch_size):
        sel = order[lo:lo + batch_size]
        idx, mask = collate([rows[i] for i in sel], pad_id)
        idx, mask = idx.to(device), mask.to(device)
        if body is not None:
            # right padding under causal attention: the body needs no mask (SequenceClassifier.features)
            logits = model.head(pool(body(idx), mask.bool(), model.pooling)).float()
        else:
            logits = model(idx, mask).float()
        p = torch.softmax(logits, dim=-1).cpu().numpy()
        if out is None:
            out = np.empty((len(rows), p.shape[1]), dtype=np.float32)
        out[sel] = p
        lengths = [len(rows[i]) for i in sel]
        tokens += sum(lengths)
        if flops_of is not None:
            flops += sum(flops_of(n) for n in lengths)
        if bar is not None:
            bar.update(len(sel))
            seconds = time.perf_counter() - t0
            bar.set_postfix_str(f"{tokens / seconds:,.0f} tok/s" + (f", {flops / seconds / 1e9:.0f} GFLOP/s"
                                                                     if flops else ""), refresh=False)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if stats is not None:
        stats.update(tokens=tokens, seconds=seconds, tokens_per_s=tokens / max(seconds, 1e-9))
        if flops:
            stats["forward_gflops_per_s"] = flops / max(seconds, 1e-9) / 1e9
    model.train(was_training)
    return out
