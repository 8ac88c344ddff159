"""A copy mechanism for the decoder-only seq2seq model (pointer-generator, See et al. 2017): the next token is
drawn from a mixture of the vocabulary distribution and an attention over the source tokens of the example,

    p(w) = p_gen * softmax(logits)(w) + (1 - p_gen) * sum_{s : x_s = w} a_s,
    a = softmax_s(q . k_s / sqrt(dim)) over source positions only,   p_gen = sigmoid(g . h + b),

with q from the current position's final hidden state and k_s from the source positions' ones. Summaries then
take names and numbers from the e-mail instead of the frequent training subjects. ``log_mixture`` returns
log p, which greedy, sampling and beam search use as they use logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CopyHead(nn.Module):
    def __init__(self, n_embd: int, dim: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.query = nn.Linear(n_embd, dim, bias=False)
        self.key = nn.Linear(n_embd, dim, bias=False)
        self.gate = nn.Linear(n_embd, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, 2.0)  # start mostly generating (p_gen ~ 0.88): copying is learned

    def keys(self, source_hidden: torch.Tensor) -> torch.Tensor:
        """(..., S, dim) keys of the source positions' final hidden states (cached for decoding)."""
        return self.key(source_hidden)

    def log_mixture(self, hidden: torch.Tensor, logits: torch.Tensor, keys: torch.Tensor, source_ids: torch.Tensor,
                    source_mask: torch.Tensor) -> torch.Tensor:
        """log p over the vocabulary at each query position.

        hidden (N, d) and logits (N, V) at N query positions; keys (N, S, dim), source_ids (N, S) and
        source_mask (N, S) (True = a source token this query may copy) describe each query's own source. A query
        with no source token falls back to the vocabulary distribution."""
        p_gen = torch.sigmoid(self.gate(hidden)).float()  # (N, 1)
        scores = torch.einsum("nd,nsd->ns", self.query(hidden), keys).float() / math.sqrt(self.dim)
        scores = scores.masked_fill(~source_mask, float("-inf"))
        has_source = source_mask.any(dim=-1, keepdim=True)
        attn = torch.where(has_source, scores.softmax(dim=-1).nan_to_num(0.0), torch.zeros_like(scores))
        copy = torch.zeros_like(logits, dtype=torch.float32).scatter_add_(-1, source_ids, attn)
        gen = torch.where(has_source, p_gen, torch.ones_like(p_gen))
        mix = gen * F.softmax(logits.float(), dim=-1) + (1 - gen) * copy
        return torch.log(mix.clamp_min(1e-12))

    def target_log_probs(self, hidden: torch.Tensor, lm_head: nn.Module, idx: torch.Tensor, targets: torch.Tensor,
                         source: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """log p(target) under the mixture at every position with a target (training and validation).

        hidden (B, T, d) final hidden states of packed rows; idx/targets (B, T) as for the language-model loss
        (-100 = no target); source (B, T) True at the source tokens of each example; segment (B, T) the
        example each position belongs to (-1 = padding). A target position copies from the source tokens of its
        own example only. Returns (N,) for the N target positions, in row-major order. The vocabulary head runs
        only at the target positions, and the mixture is taken in log space with the target's vocabulary
        log probability from cross-entropy, so no (N, vocabulary) mixture is built."""
        keep = targets != -100
        b, t = keep.nonzero(as_tuple=True)
        h = hidden[b, t]  # (N, d)
        y = targets[b, t]
        lp_vocab = -F.cross_entropy(lm_head(h).float(), y, reduction="none")
        allowed = source[b] & (segment[b] == segment[b, t].unsqueeze(1))  # (N, T)
        # every row's (T, T) query-key scores, then the target rows: smaller than gathering (N, T, dim) keys
        scores = (self.query(hidden) @ self.key(hidden).transpose(1, 2))[b, t].float() / math.sqrt(self.dim)
        has_source = allowed.any(dim=-1)
        # A row with no source gets uniform scores, only to keep the softmax finite: its gate is forced to 1.
        attn = scores.masked_fill(~allowed, float("-inf")).masked_fill(~has_source.unsqueeze(1), 0.0).softmax(-1)
        copy = (attn * (idx[b] == y.unsqueeze(1))).sum(-1)
        gate = self.gate(h).float().squeeze(-1)
        # clamp: log(0) where the target is not in the source; its gradient is then 0, never NaN
        mixed = torch.logaddexp(F.logsigmoid(gate) + lp_vocab, F.logsigmoid(-gate) + copy.clamp_min(1e-30).log())
        return torch.where(has_source, mixed, lp_vocab)
