"""A Llama-style decoder-only transformer in one readable file.

RMSNorm, rotary position embeddings (rotate-half convention, as in Hugging Face ``LlamaForCausalLM``),
SwiGLU MLP, grouped-query attention through ``scaled_dot_product_attention``, tied input/output
embeddings, dropout, and a pre-allocated KV cache for generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .copy import CopyHead


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    block_size: int = 256  # the context length
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None  # None = n_head (multi-head); fewer = grouped-query attention
    n_embd: int = 384
    mlp_hidden: int | None = None  # None = 8/3 * n_embd rounded up to `multiple_of` (Llama's rule)
    multiple_of: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0  # on embeddings and residual branches
    attn_dropout: float = 0.0  # on attention probabilities; > 0 moves SDPA off its fused CPU kernel
    tie_embeddings: bool = True
    init_std: float = 0.02
    copy_dim: int = 0  # > 0: a pointer-generator copy head of this width (seq2seq decoders, model/copy.py)
    extra: dict = field(default_factory=dict)  # free-form metadata, carried into config.json

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.mlp_hidden is None:
            h = int(8 * self.n_embd / 3)
            self.mlp_hidden = self.multiple_of * math.ceil(h / self.multiple_of)

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.n_kv_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("model head dimension (n_embd / n_head) must be even for rotary embeddings")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.copy_dim < 0:
            raise ValueError(f"model.copy_dim must be >= 0 (0 = no copy head), got {self.copy_dim}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# Presets: name -> field overrides. Parameter counts are for vocab 8192 (see `scratchlm models`).
PRESETS: dict[str, dict] = {
    "1m": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),
    "6m": dict(n_layer=6, n_head=6, n_embd=192, block_size=256),
    "20m": dict(n_layer=8, n_head=8, n_embd=384, n_kv_head=4, block_size=512),
    "50m": dict(n_layer=12, n_head=12, n_embd=576, n_kv_head=4, block_size=512),
    "125m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset '{name}'; choose one of {', '.join(PRESETS)}")
    cfg = ModelConfig(**{**PRESETS[name], **overrides})
    cfg.validate()
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_cache(cfg: ModelConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    t = torch.arange(length, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)  # rotate-half layout: [f0..f_{d/2-1}, f0..f_{d/2-1}]
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (T, D) or (B, 1, T, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache:
    """Pre-allocated keys/values for every layer: (n_layer, B, n_kv_head, max_len, head_dim)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device, dtype) -> None:
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # number of positions already filled

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        end = self.pos + t
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.max_len}")
        kl, vl = self.k[layer], self.v[layer]  # views (narrow/select: fewer ops than slice indexing)
        kl.narrow(2, self.pos, t).copy_(k)
        vl.narrow(2, self.pos, t).copy_(v)
        return kl.narrow(2, 0, end), vl.narrow(2, 0, end)

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search): row i becomes old row index[i]."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.dropout = cfg.attn_dropout

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        if self.n_kv_head != self.n_head:
            rep = self.n_head // self.n_kv_head
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        dropout = self.dropout if self.training else 0.0
        if mask is None:  # plain causal attention over a fresh sequence
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask=None, cache=None):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, mask, cache))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    """Decoder-only language model. ``forward`` returns hidden states; ``logits``/``loss`` build on it."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_cache(cfg, cfg.block_size)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))
        # made after the init above, which would overwrite the copy gate's bias
        self.copy_head = CopyHead(cfg.n_embd, cfg.copy_dim) if cfg.copy_dim else None

    def add_copy_head(self, dim: int) -> None:
        """Give a (pretrained) decoder a fresh copy head of width ``dim``, recorded in its config."""
        if self.copy_head is not None:
            raise ValueError(f"the model already has a copy head (copy_dim {self.cfg.copy_dim})")
        self.cfg.copy_dim = dim
        self.cfg.validate()
        ref = self.embed.weight
        self.copy_head = CopyHead(self.cfg.n_embd, dim).to(device=ref.device, dtype=ref.dtype)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    # ---- bookkeeping -------------------------------------------------------------------------
    def set_dropout(self, p: float) -> None:
        """Residual/embedding dropout for fine-tuning (attention dropout untouched); recorded in cfg, so a
        saved model says what it was trained with."""
        self.cfg.dropout = p
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None, *, lm_head: bool = True) -> float:
        """Training FLOPs per token (forward + backward): 6N for the matmuls + attention scores.

        N counts the output projection (the tied embedding used as lm_head is a real matmul; ``lm_head=False``
        for heads that never compute it, e.g. a classifier) but not the embedding lookup; attention adds
        12 * n_layer * n_embd * T (PaLM appendix B, as in nanoGPT)."""
        cfg = self.cfg
        T = seq_len or cfg.block_size
        n = self.num_params(non_embedding=True) + (cfg.vocab_size * cfg.n_embd if lm_head else 0)
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * T

    # ---- forward -----------------------------------------------------------------------------
    def rope(self, T: int, start: int = 0, position_ids: torch.Tensor | None = None):
        if position_ids is not None:
            if int(position_ids.max()) >= self.rope_cos.shape[0]:
                self._grow_rope(int(position_ids.max()) + 1)
            return self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1)
        if start + T > self.rope_cos.shape[0]:
            self._grow_rope(start + T)
        return self.rope_cos[start:start + T], self.rope_sin[start:start + T]

    def _grow_rope(self, length: int) -> None:
        cos, sin = rope_cache(self.cfg, length)
        self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)

    def forward(self, idx: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (B, T, n_embd).

        mask: optional boolean (B, 1, T, S) attention mask, True = may attend (padding, packed documents).
        cache: a KVCache; tokens are written at cache.pos and the caller advances cache.pos.
        """
        cos, sin, mask = self.positions(idx, position_ids, mask, cache)
        x = self.drop(self.embed(idx))
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return self.norm(x)

    def positions(self, idx: torch.Tensor, position_ids: torch.Tensor | None, mask: torch.Tensor | None,
                  cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The rotary tables (cos, sin) for the tokens of ``idx`` and the attention mask to use with them."""
        T = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if position_ids is None and start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length {self.cfg.block_size}")
        cos, sin = self.rope(T, start, position_ids)
        if cache is not None and mask is None and start > 0 and T > 1:
            # chunked prefill on top of a filled cache: causal over the new block, full over the past
            mask = torch.ones(T, start + T, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        return cos, sin, mask

    def logits(self, idx: torch.Tensor, **kw) -> torch.Tensor:
        return self.lm_head(self(idx, **kw))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean",
             only_targets: bool = False, **kw) -> torch.Tensor:
        """Next-token cross-entropy; targets == -100 are ignored (loss masking).

        ``only_targets``: run the output head only at positions that have a target. With loss masking (a
        seq2seq source, padding) that skips the vocabulary projection, the largest matmul of a small model
        with a large vocabulary, wherever it would be thrown away. Same loss, same gradients.
        """
        if not only_targets:
            logits = self.logits(idx, **kw)
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100, reduction=reduction)
        h = self(idx, **kw)
        keep = targets.reshape(-1) != -100
        logits = self.lm_head(h.reshape(-1, h.size(-1))[keep])
        return F.cross_entropy(logits.float(), targets.reshape(-1)[keep], reduction=reduction)


def with_fields(cfg: ModelConfig, **kw) -> ModelConfig:
    out = replace(cfg, **kw)
    out.validate()
    return out
