"""Language modelling: next-token loss on token shards, evaluated as loss, perplexity and bits-per-byte."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn

from ..data.shards import TokenShard


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes each token stands for; special tokens count 0 (they are not text)."""
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    special = set(tokenizer.special_ids)
    for i in range(tokenizer.vocab_size):
        if i not in special:
            lengths[i] = len(tokenizer.token_bytes(i))
    return lengths


class LMLoss(nn.Module):
    """forward(batch) -> (summed next-token loss, number of target tokens)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        targets = batch["targets"]
        loss = self.model.loss(batch["idx"], targets, reduction="sum")
        return loss, (targets != -100).sum()


class LMTask:
    """Random windows (or an epoch of shuffled contiguous windows) from a token shard.

    Step ``s`` draws its global batch from a generator seeded by (seed, s), then rank r's micro-batch m
    takes rows [(m * world + r) * B, ... + B): any split into processes and accumulation steps sees
    the same rows, and resuming at step s needs nothing but s.
    """

    def __init__(self, model: nn.Module, train: TokenShard, val: TokenShard | None, *, block_size: int,
                 seed: int = 1337, sampling: str = "random", token_bytes: np.ndarray | None = None) -> None:
        self.model = model
        self.train = train
        self.val = val
        self.block_size = block_size
        self.seed = seed
        self.sampling = sampling
        self.token_bytes = torch.as_tensor(token_bytes) if token_bytes is not None else None
        n = len(train.tokens)
        if n <= block_size + 1:
            raise ValueError(f"training shard {train.prefix} has {n} tokens, fewer than one window of "
                             f"{block_size + 1}; use more text or a smaller model.block_size")
        self.n_windows = (n - 1) // block_size

    def loss_module(self) -> nn.Module:
        return LMLoss(self.model)

    def _starts(self, step: int, global_batch: int) -> np.ndarray:
        if self.sampling == "random":
            rng = np.random.Generator(np.random.PCG64([self.seed, step]))
            return rng.integers(0, len(self.train.tokens) - self.block_size - 1, size=global_batch)
        # epoch mode: every contiguous window once per epoch, in a seeded order per epoch
        first = step * global_batch
        idx = np.arange(first, first + global_batch)
        epochs, pos = np.divmod(idx, self.n_windows)
        out = np.empty(global_batch, dtype=np.int64)
        for e in np.unique(epochs):
            perm = np.random.Generator(np.random.PCG64([self.seed, int(e)])).permutation(self.n_windows)
            sel = epochs == e
            out[sel] = perm[pos[sel]] * self.block_size
        return out

    def _windows(self, tokens: np.ndarray, starts: np.ndarray) -> dict[str, torch.Tensor]:
        T = self.block_size
        rows = np.stack([np.asarray(tokens[s:s + T + 1], dtype=np.int64) for s in starts])
        data = torch.from_numpy(rows)
        return {"idx": data[:, :-1].contiguous(), "targets": data[:, 1:].contiguous()}

    def micro_batches(self, step, n_micro, micro_batch_size, rank, world_size):
        starts = self._starts(step, n_micro * micro_batch_size * world_size)
        out = []
        for m in range(n_micro):
            lo = (m * world_size + rank) * micro_batch_size
            out.append(self._windows(self.train.tokens, starts[lo:lo + micro_batch_size]))
        return out

    def batch_tokens(self, batch) -> int:
        return batch["idx"].numel()

    def val_windows(self, max_windows: int | None = None) -> np.ndarray:
        if self.val is None:
            return np.zeros(0, dtype=np.int64)
        n = (len(self.val.tokens) - 1) // self.block_size
        if max_windows and max_windows < n:
            # spread over the whole shard: it holds the corpora one after another, so the first windows
            # would measure the first corpus only
            return np.linspace(0, n - 1, max_windows).astype(np.int64) * self.block_size
        return np.arange(n, dtype=np.int64) * self.block_size

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int, batch_size: int = 16) -> dict[str, float]:
        if self.val is None:
            return {}
        starts = self.val_windows(max_batches * batch_size if max_batches else None)
        if len(starts) == 0:  # validation text shorter than one window: evaluate it as one short window
            return evaluate_tokens(model, np.asarray(self.val.tokens), self.token_bytes)
        return evaluate_windows(model, self.val.tokens, starts, self.block_size, self.token_bytes, batch_size)


# A scoring pass this long (in tokens) compiles the model first: torch.compile costs ~20-40 s on a 2-core CPU
# and saves ~20% of the forward, so it pays only on long passes (docs/results.md, "Scoring passes").
COMPILE_MIN_TOKENS = 200_000
HEAD_ROWS = 256  # positions per output-head chunk: the chunk's logits (rows x vocab fp32) stay in the cache


def token_losses(model, hidden: torch.Tensor, targets: torch.Tensor, rows: int = HEAD_ROWS) -> torch.Tensor:
    """Next-token loss (nats) at every position: the output head and log-sum-exp chunk by chunk, so the full
    (positions x vocabulary) logits are never written to memory (at a 16k vocabulary they were half the pass)."""
    h = hidden.reshape(-1, hidden.size(-1))
    t = targets.reshape(-1)
    out = torch.empty(t.numel(), dtype=torch.float32, device=h.device)
    for i in range(0, t.numel(), rows):
        logits = model.lm_head(h[i:i + rows]).float()
        out[i:i + rows] = torch.logsumexp(logits, -1) - logits.gather(-1, t[i:i + rows, None]).squeeze(-1)
    return out


def _body(model, tokens: int, batch_shape: tuple[int, int]):
    """The model's forward (hidden states) for the pass: compiled for long passes where compile works."""
    if tokens < COMPILE_MIN_TOKENS or not hasattr(model, "lm_head"):
        return model
    try:
        compiled = torch.compile(model, dynamic=False)
        compiled(torch.zeros(batch_shape, dtype=torch.long, device=next(model.parameters()).device))
        return compiled
    except Exception:  # noqa: BLE001 -- no compiler / unsupported backend: the eager model gives the same scores
        return model


@torch.no_grad()
def evaluate_windows(model, tokens, starts, block_size, token_bytes=None, batch_size=16,
                     progress: bool | str = False) -> dict[str, float]:
    """Loss (nats/token), perplexity and bits-per-byte over non-overlapping windows."""
    device = next(model.parameters()).device
    total_loss, total_tokens, total_bytes, total_loss_text = 0.0, 0, 0, 0.0
    body = _body(model, len(starts) * block_size, (batch_size, block_size)) if len(starts) >= batch_size else model
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts) * block_size, desc=progress if isinstance(progress, str) else "score",
                   unit="tok", unit_scale=True, dynamic_ncols=True)
    t0 = time.perf_counter()
    for i in range(0, len(starts), batch_size):
        rows = np.stack([np.asarray(tokens[s:s + block_size + 1], dtype=np.int64) for s in starts[i:i + batch_size]])
        data = torch.from_numpy(rows).to(device)
        idx, targets = data[:, :-1], data[:, 1:]
        # a compiled body has one static shape: the last, smaller batch runs eager
        hidden = (body if idx.shape[0] == batch_size else model)(idx)
        loss = token_losses(model, hidden, targets)
        total_loss += loss.sum().item()
        total_tokens += targets.numel()
        if token_bytes is not None:
            nb = token_bytes.to(device)[targets.reshape(-1)]
            total_bytes += int(nb.sum().item())
            total_loss_text += loss[nb > 0].sum().item()  # special tokens carry no bytes: excluded (as nanochat)
        if bar is not None:
            bar.update(targets.numel())
            seconds = time.perf_counter() - t0
            if hasattr(model, "flops_per_token") and seconds > 0:
                bar.set_postfix_str(f"{total_tokens / seconds:,.0f} tok/s, "
                                    f"{model.flops_per_token(block_size) / 3 * total_tokens / seconds / 1e9:.0f} "
                                    f"GFLOP/s", refresh=False)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    out = {"val_loss": total_loss / total_tokens, "val_ppl": math.exp(min(total_loss / total_tokens, 50))}
    if progress:  # throughput of the pass, for the caller to print (not a metric of the model)
        out["tokens_per_s"] = total_tokens / max(seconds, 1e-9)
        if hasattr(model, "flops_per_token"):  # forward only: a third of the training FLOPs
            out["forward_gflops_per_s"] = model.flops_per_token(block_size) / 3 * out["tokens_per_s"] / 1e9
    if token_bytes is not None and total_bytes:
        out["val_bpb"] = total_loss_text / (math.log(2) * total_bytes)
    return out


def evaluate_tokens(model, tokens: np.ndarray, token_bytes=None, max_tokens: int | None = None,
                    progress: bool | str = False) -> dict[str, float]:
    """Score ``tokens`` in non-overlapping windows; ``max_tokens`` caps the windows, evenly spaced.
    ``progress`` (True or a label) shows a bar and adds the pass's tokens/s and forward GFLOP/s."""
    block = model.cfg.block_size
    if len(tokens) < 2:
        raise ValueError("need at least 2 tokens to evaluate")
    if len(tokens) <= block + 1:
        return evaluate_windows(model, tokens, np.array([0]), len(tokens) - 1, token_bytes, 1)
    n = (len(tokens) - 1) // block
    if max_tokens is not None and max_tokens // block < n:
        return evaluate_windows(model, tokens, np.linspace(0, n - 1, max(1, max_tokens // block)).astype(np.int64)
                                * block, block, token_bytes, progress=progress)
    starts = np.arange(n) * block
    return evaluate_windows(model, tokens, starts, block, token_bytes, progress=progress)
