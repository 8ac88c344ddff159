"""Sequence to sequence with a decoder-only model: ``<|bos|> [task, language tokens] source <|sep|> target
<|eos|>``, loss on the target tokens only, short pairs packed into full contexts without attention across
examples.

Packing: examples are laid end to end in rows of ``block_size`` tokens (first fit over a seeded order);
every example restarts its positions at 0 and a block-diagonal causal mask keeps it from attending to its
neighbours, so a packed example computes exactly what it computes alone (tested). Rows of step ``s`` are a
function of (seed, s) only, as in the other tasks, so resume and any process/accumulation split see the
same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from .classify import LengthGroupedBatches, truncate_head_tail

TASK_TOKENS = {"translate": "<|translate|>", "summarize": "<|summarize|>"}
LANG_TOKENS = {"en": "<|en|>", "zh": "<|zh|>"}


def prompt_prefix(tokenizer, task: str, src_lang: str | None = None, tgt_lang: str | None = None) -> list[int]:
    """``<|bos|> <task> [<src lang> <tgt lang>]``: what comes before the source."""
    if task not in TASK_TOKENS:
        raise ValueError(f"unknown seq2seq task {task!r}; choose one of {sorted(TASK_TOKENS)}")
    ids = [tokenizer.bos_id, tokenizer.token_id(TASK_TOKENS[task])]
    if task == "translate":
        for lang in (src_lang, tgt_lang):
            if lang not in LANG_TOKENS:
                raise ValueError(f"language {lang!r} has no direction token; supported: {sorted(LANG_TOKENS)}")
            ids.append(tokenizer.token_id(LANG_TOKENS[lang]))
    return ids


@dataclass
class Example:
    prompt: list[int]  # prefix + source + <|sep|>
    target: list[int]  # target + <|eos|>
    source_start: int = 0  # where the source begins in the prompt (after the prefix): what a copy head may copy

    def __len__(self) -> int:
        return len(self.prompt) + len(self.target)


@dataclass
class EncodeReport:
    examples: int = 0
    source_truncated: int = 0
    target_truncated: int = 0
    dropped_empty: int = 0
    dropped: list[int] = field(default_factory=list)  # indices of dropped pairs

    def summary(self) -> str:
        return (f"{self.examples:,} examples; sources cut to fit: {self.source_truncated:,}; targets cut: "
                f"{self.target_truncated:,}; empty pairs dropped: {self.dropped_empty:,}")


def with_prefix_space(texts: Sequence[str]) -> list[str]:
    """Each text with exactly one leading space (a blank text becomes empty)."""
    return [" " + t.lstrip() if t.strip() else "" for t in texts]


def encode_pairs(tokenizer, sources: Sequence[str], targets: Sequence[str] | None, prefix: list[int], *,
                 block_size: int, max_target_tokens: int, head_fraction: float = 1.0,
                 max_source_tokens: int | None = None,
                 prefix_space: bool = False) -> tuple[list[Example], EncodeReport]:
    """Token examples; a source too long for the context (or longer than ``max_source_tokens``) keeps its
    head (``head_fraction`` of the room; 1.0 = the beginning only) and tail, a target longer than
    ``max_target_tokens`` is cut (and counted). ``prefix_space``: encode both sides with one leading space
    (a blank side stays empty, and is dropped as such)."""
    sep, eos = tokenizer.sep_id, tokenizer.eos_id
    report = EncodeReport()

    def encode(texts: Sequence[str]) -> list[list[int]]:
        return tokenizer.encode_batch(with_prefix_space(texts) if prefix_space else list(texts))

    src_ids = encode(sources)
    tgt_ids = encode(targets) if targets is not None else [[] for _ in sources]
    out = []
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if not s or (targets is not None and not t):
            report.dropped_empty += 1
            report.dropped.append(i)
            continue
        if len(t) > max_target_tokens:
            t = t[:max_target_tokens]
            report.target_truncated += 1
        room = block_size - len(prefix) - 1 - (len(t) + 1 if targets is not None else max_target_tokens + 1)
        if room < 1:
            raise ValueError(f"block_size {block_size} leaves no room for the source after a target of "
                             f"{len(t)} tokens; lower max_target_tokens")
        if max_source_tokens is not None:
            room = min(room, max_source_tokens)
        if len(s) > room:
            s = truncate_head_tail(s, room, head_fraction)
            report.source_truncated += 1
        out.append(Example([*prefix, *s, sep], [*t, eos] if targets is not None else [], len(prefix)))
    report.examples = len(out)
    return out, report


def example_arrays(ex: Example) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, targets) for one example: next-token targets, -100 wherever the next token is still
    part of the prompt (no loss on the source)."""
    full = np.asarray(ex.prompt + ex.target, dtype=np.int64)
    targets = full[1:].copy()
    targets[: len(ex.prompt) - 1] = -100
    return full[:-1], targets


def pack(lengths: np.ndarray, order: np.ndarray, block_size: int) -> list[list[int]]:
    """First-fit packing of examples (in ``order``) into rows of at most ``block_size`` input tokens (an
    example longer than that gets a row of its own). Rows with less room than the shortest example are
    closed, so the scan stays short."""
    rows: list[list[int]] = []
    open_rows: list[int] = []  # indices into rows, in creation order
    room: list[int] = []  # free tokens of each open row
    shortest = int(lengths[order].min()) if len(order) else 0
    for i in order:
        n = int(lengths[i])
        for k, free in enumerate(room):
            if n <= free:
                rows[open_rows[k]].append(int(i))
                room[k] -= n
                if room[k] < shortest:
                    del open_rows[k], room[k]
                break
        else:
            rows.append([int(i)])
            if block_size - n >= shortest:
                open_rows.append(len(rows) - 1)
                room.append(block_size - n)
    return rows


def packed_batch(examples: Sequence[Example], rows: Sequence[Sequence[int]], block_size: int, pad_id: int,
                 pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """idx/targets/position_ids (B, T) and a block-diagonal causal mask (B, 1, T, T) for packed rows, with
    segment (B, T), the example of each position within its row (-1: padding), and source (B, T), True at
    the source tokens (what a copy head may copy)."""
    T = pad_to or max(sum(len(examples[i]) - 1 for i in row) for row in rows)
    B = len(rows)
    idx = np.full((B, T), pad_id, dtype=np.int64)
    tgt = np.full((B, T), -100, dtype=np.int64)
    pos = np.zeros((B, T), dtype=np.int64)
    seg = np.full((B, T), -1, dtype=np.int64)
    src = np.zeros((B, T), dtype=bool)
    for b, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            x, y = example_arrays(examples[i])
            n = len(x)
            idx[b, at:at + n], tgt[b, at:at + n] = x, y
            pos[b, at:at + n] = np.arange(n)
            seg[b, at:at + n] = k
            ex = examples[i]
            src[b, at + ex.source_start:at + len(ex.prompt) - 1] = True
            at += n
    seg_t = torch.from_numpy(seg)
    same = seg_t[:, :, None] == seg_t[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    eye = torch.eye(T, dtype=torch.bool)
    mask = (same & causal & (seg_t[:, :, None] >= 0)) | eye  # pads see only themselves (no empty rows)
    return {"idx": torch.from_numpy(idx), "targets": torch.from_numpy(tgt), "position_ids": torch.from_numpy(pos),
            "mask": mask.unsqueeze(1), "segment": seg_t, "source": torch.from_numpy(src)}


class Seq2SeqLoss(nn.Module):
    """forward(batch) -> (summed next-token loss over target tokens, number of target tokens). A model with a
    copy head is scored on its pointer-generator mixture (``model/copy.py``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        targets = batch["targets"]
        kw = {k: batch[k] for k in ("position_ids", "mask") if k in batch}
        copy_head = getattr(self.model, "copy_head", None)
        if copy_head is None:
            loss = self.model.loss(batch["idx"], targets, reduction="sum", only_targets=True, **kw)
        else:
            hidden = self.model(batch["idx"], **kw)
            lp = copy_head.target_log_probs(hidden, self.model.lm_head, batch["idx"], targets, batch["source"],
                                            batch["segment"])
            loss = -lp.sum()
        return loss, (targets != -100).sum()


class Seq2SeqTask:
    """Packed (or one-per-row) examples for the shared Trainer; validation loss per target token."""

    def __init__(self, model: nn.Module, train: list[Example], val: list[Example], *, block_size: int,
                 pad_id: int, seed: int = 1337, packing: bool = True, eval_batch_size: int = 16,
                 pack_length: int | None = None) -> None:
        if not train:
            raise ValueError("no training examples")
        self.model = model
        self.train, self.val = train, val
        self.block_size = block_size
        # Rows of pack_length tokens (<= block_size): short pairs waste less attention on short rows; an
        # example longer than a row gets a row of its own.
        self.pack_length = min(pack_length or block_size, block_size)
        self.pad_id = pad_id
        self.seed = seed
        self.packing = packing
        self.eval_batch_size = eval_batch_size
        self.lengths = np.array([len(e) - 1 for e in train])
        if int(self.lengths.max()) > block_size:
            raise ValueError(f"an example has {int(self.lengths.max())} tokens, more than block_size {block_size}")
        self._epochs: dict[int, list[list[int]]] = {}
        self._sizes: dict[int, int] = {}  # rows in each epoch: packing a different order gives a different count

    def loss_module(self) -> nn.Module:
        return Seq2SeqLoss(self.model)

    def epoch_rows(self, epoch: int) -> list[list[int]]:
        """The rows of one epoch: a seeded shuffle of the examples, packed (or one example per row)."""
        if epoch not in self._epochs:
            order = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(self.train))
            if self.packing:
                rows = pack(self.lengths, order, self.pack_length)
                rng = np.random.Generator(np.random.PCG64([self.seed, epoch, 1]))
                rows = [rows[i] for i in rng.permutation(len(rows))]
            else:
                rows = [[int(i)] for i in order]
            self._epochs = {e: r for e, r in self._epochs.items() if e >= epoch - 1}  # a step spans <= 2 epochs
            self._epochs[epoch] = rows
            self._sizes[epoch] = len(rows)
        return self._epochs[epoch]

    def epoch_size(self, epoch: int) -> int:
        if epoch not in self._sizes:
            self.epoch_rows(epoch)
        return self._sizes[epoch]

    def rows_per_epoch(self) -> int:
        """Rows in the first epoch (later ones differ by a few rows when packing)."""
        return self.epoch_size(0)

    def locate(self, j: int) -> tuple[int, int]:
        """(epoch, row) of the j-th row of the run: epochs follow one another, each as long as its packing."""
        epoch = 0
        while j >= self.epoch_size(epoch):
            j -= self.epoch_size(epoch)
            epoch += 1
        return epoch, j

    def micro_batches(self, step, n_micro, micro_batch_size, rank, world_size):
        global_batch = n_micro * micro_batch_size * world_size
        picks = []
        for j in range(step * global_batch, (step + 1) * global_batch):
            epoch, pos = self.locate(j)
            picks.append(self.epoch_rows(epoch)[pos])
        out = []
        for m in range(n_micro):
            lo = (m * world_size + rank) * micro_batch_size
            rows = picks[lo:lo + micro_batch_size]
            batch = packed_batch(self.train, rows, self.block_size, self.pad_id)
            if not self.packing:  # one example per row, right-padded: plain causal attention is exact
                batch.pop("mask")
                batch.pop("position_ids")
            out.append(batch)
        return out

    def batch_tokens(self, batch) -> int:
        return int((batch["idx"] != self.pad_id).sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int) -> dict[str, float]:
        if not self.val:
            return {}
        device = next(model.parameters()).device
        n = len(self.val) if not max_batches else min(len(self.val), max_batches * self.eval_batch_size)
        order = np.argsort([-len(e) for e in self.val[:n]], kind="stable")
        total, count = 0.0, 0
        loss_of = Seq2SeqLoss(model)
        for lo in range(0, n, self.eval_batch_size):
            rows = [[int(i)] for i in order[lo:lo + self.eval_batch_size]]
            b = packed_batch(self.val, rows, self.block_size, self.pad_id)
            # one example per row, right-padded: plain causal attention is exact
            s, c = loss_of({k: b[k].to(device) for k in ("idx", "targets", "source", "segment")})
            total += float(s)
            count += int(c)
        loss = total / max(count, 1)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50))}


class Seq2SeqRNNTask(LengthGroupedBatches):
    """(source ids, target ids) pairs for the recurrent encoder-decoder baseline, in length-grouped batches."""

    def __init__(self, model: nn.Module, train: list[tuple[list[int], list[int]]],
                 val: list[tuple[list[int], list[int]]], *, seed: int = 1337, eval_batch_size: int = 32) -> None:
        from ..baselines.seq2seq_rnn import Seq2SeqRNNLoss, make_batch

        if not train:
            raise ValueError("no training examples")
        self.model, self.train, self.val = model, train, val
        self.seed, self.eval_batch_size = seed, eval_batch_size
        self._make_batch, self._loss = make_batch, Seq2SeqRNNLoss
        self.lengths = np.array([len(s) + len(t) for s, t in train])
        self._plan: tuple[int, int, np.ndarray] | None = None

    def loss_module(self) -> nn.Module:
        return self._loss(self.model)

    def micro_batches(self, step, n_micro, micro_batch_size, rank, world_size):
        out = []
        for sel in self.micro_rows(step, n_micro, micro_batch_size, rank, world_size):
            batch = self._make_batch([self.train[i] for i in sel], self.model.cfg)
            out.append({**batch, "count": int((batch["tgt_out"] != -100).sum())})
        return out

    def batch_tokens(self, batch) -> int:
        return int(batch["src_mask"].sum()) + int((batch["tgt_out"] != -100).sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int) -> dict[str, float]:
        if not self.val:
            return {}
        n = len(self.val) if not max_batches else min(len(self.val), max_batches * self.eval_batch_size)
        total, count = 0.0, 0
        for lo in range(0, n, self.eval_batch_size):
            batch = self._make_batch(self.val[lo:min(lo + self.eval_batch_size, n)], model.cfg)
            s, c = model.loss(batch)
            total, count = total + float(s), count + int(c)
        loss = total / max(count, 1)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50))}
