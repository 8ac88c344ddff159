"""The decoder's forward pass for generation, on its weights rearranged ("packed") for decoding on a CPU.

A decode step multiplies one row per sequence by every weight matrix, and there the layout decides the
speed: a column-major ``(out, in)`` matrix streams through the GEMV faster than the row-major weight an
``nn.Linear`` keeps, and fusing q/k/v and gate/up saves three matmuls and their dispatch per block (at batch 1
a small model's step is mostly per-op overhead). The pack also folds each block's two RMSNorm gains into the
columns of q/k/v and gate/up and the attention scale into q, and stores q/k features in interleaved pairs so
rotary embeddings are one complex multiply. ``benchmarks/decode_layout.py`` measures the layouts; the
figures are in docs/results.md.

The pack is a copy of the weights, made on first use and remade when any weight changes (tensor version
counters), so training, loading a state dict or merging LoRA never leave it stale. It applies to eval-mode,
no-grad, float32 CPU decoders whose projections are plain ``nn.Linear`` layers without bias (bf16 matmuls on
a column-major weight take a slow path): everywhere else ``forward`` and ``logits`` run the model itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.transformer import Block, KVCache, Transformer
from . import engine


class DecodeCache(KVCache):
    """A KV cache that also holds the packs its generation decodes with, looked up once: checking them for
    staleness walks every layer, which costs as much as a small model's decode step. Keys cached on the
    packs are in their pair order, so only ``forward`` here reads this cache."""

    def __init__(self, model: Transformer, batch_size: int, max_len: int, device, dtype) -> None:
        super().__init__(model.cfg, batch_size, max_len, device, dtype)
        self.packs = decode_pack(model)
        self.engine = engine.pack(model)


def _packs_for(model: Transformer, cache: KVCache | None) -> list[dict] | None:
    if not isinstance(cache, DecodeCache) or model.training or torch.is_grad_enabled():
        return None
    return cache.packs


def forward(model: Transformer, idx: torch.Tensor, *, cache: KVCache | None, position_ids: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``model(idx, ...)``'s final hidden states, on the packs when ``cache`` holds them."""
    packs = _packs_for(model, cache)
    if packs is None:
        return model(idx, position_ids=position_ids, mask=mask, cache=cache)
    cos, sin, mask = model.positions(idx, position_ids, mask, cache)
    half = model.cfg.head_dim // 2
    # rotations as complex numbers, broadcast over heads: (T, 1, D/2), or per row (B, T, 1, D/2)
    rotations = torch.complex(cos[..., :half], sin[..., :half])
    rotations = rotations.unsqueeze(1) if rotations.dim() == 2 else rotations.transpose(1, 2)
    x = model.embed(idx)
    for block, pack in zip(model.layers, packs):
        x = _packed_block(block, x, rotations, mask, cache, pack)
    return model.norm(x)


def logits(model: Transformer, hidden: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """The output head on ``hidden``, on the packed weight when ``cache`` holds the packs."""
    packs = _packs_for(model, cache)
    return F.linear(hidden, packs[-1]["lm_head"]) if packs else model.lm_head(hidden)


def _packed_block(block: Block, x: torch.Tensor, rotations: torch.Tensor, mask: torch.Tensor | None,
                  cache: KVCache, pack: dict) -> torch.Tensor:
    """``block(x, ...)`` in eval mode, on its pack: 4 matmuls instead of 7, the norm gains and the attention
    scale already in the weights."""
    a = block.attn
    B, T, _ = x.shape
    H, KV, D = a.n_head, a.n_kv_head, a.head_dim
    qkv = F.linear(_unit_rms(x, block.attn_norm.eps), pack["qkv"]).view(B, T, H + 2 * KV, D)
    qk = torch.view_as_real(torch.view_as_complex(qkv[:, :, :H + KV].unflatten(-1, (D // 2, 2))) * rotations)
    qk = qk.view(B, T, H + KV, D)  # (B, T, heads, D), q already scaled by 1/sqrt(D)
    k, v = cache.update(a.layer_idx, qk[:, :, H:].transpose(1, 2), qkv[:, :, H + KV:].transpose(1, 2))
    if T == 1:
        # One query per row: attention is two small matmuls. Grouped heads share their K/V without copying
        # it (the query heads of a group become rows), which the fused SDPA kernel cannot.
        att = qk[:, 0, :H].reshape(B, KV, H // KV, D) @ k.transpose(-1, -2)  # (B, KV, H/KV, S)
        if mask is not None:  # (B, 1, 1, S): padding keys hidden
            att = att.masked_fill(~mask, float("-inf"))
        y = (att.softmax(dim=-1) @ v).view(B, 1, H * D)
    else:
        y = F.scaled_dot_product_attention(qk[:, :, :H].transpose(1, 2), k, v, attn_mask=mask,
                                           is_causal=mask is None, scale=1.0,
                                           enable_gqa=KV != H).transpose(1, 2).reshape(B, T, H * D)
    x = x + F.linear(y, pack["o"])
    gate, up = F.linear(_unit_rms(x, block.mlp_norm.eps), pack["gate_up"]).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, pack["down"])


def _unit_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without its gain (the pack holds it), in 4 ops: the squared norm from ``vector_norm``, then
    ``x / sqrt(|x|^2 / n + eps)``."""
    n2 = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * torch.addcmul(torch.full_like(n2, eps), n2, n2, value=1.0 / x.shape[-1]).rsqrt_()


def decode_pack(model: Transformer) -> list[dict] | None:
    """One dict of packed weights per block and a last one for the output head, or None where packing does
    not apply (see the module docstring: training, autograd, another device or dtype, LoRA or int8 layers,
    tracing and export)."""
    if (model.training or torch.is_grad_enabled() or model.embed.weight.device.type != "cpu"
            or torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()):
        return None
    mods = [model.lm_head]
    for blk in model.layers:
        mods += [blk.attn.q_proj, blk.attn.k_proj, blk.attn.v_proj, blk.attn.o_proj,
                 blk.mlp.gate_proj, blk.mlp.up_proj, blk.mlp.down_proj]
    if any(type(m) is not nn.Linear or m.bias is not None or m.weight.dtype != torch.float32 for m in mods):
        return None
    gains = [w for b in model.layers for w in (b.attn_norm.weight, b.mlp_norm.weight)]
    key = tuple((w.data_ptr(), w._version, w.dtype) for w in [m.weight for m in mods] + gains)
    cached = getattr(model, "_decode_pack_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]

    def colmajor(*ws: torch.Tensor) -> torch.Tensor:
        return torch.cat(ws, dim=0).t().contiguous().t()

    D = model.cfg.head_dim
    # rotate-half feature order [0..D/2-1, D/2..D-1] -> pairs (i, i + D/2) side by side, per head
    pairs = torch.stack([torch.arange(D // 2), torch.arange(D // 2, D)], dim=1).flatten()

    def interleave(w: torch.Tensor, heads: int) -> torch.Tensor:
        return w.view(heads, D, -1)[:, pairs].reshape(heads * D, -1)

    with torch.no_grad():
        packs = []
        for b in model.layers:
            a = b.attn
            qkv = torch.cat([interleave(a.q_proj.weight, a.n_head) / math.sqrt(D),
                             interleave(a.k_proj.weight, a.n_kv_head), a.v_proj.weight])
            gate_up = torch.cat([b.mlp.gate_proj.weight, b.mlp.up_proj.weight])
            packs.append({"qkv": colmajor(qkv * b.attn_norm.weight), "o": colmajor(a.o_proj.weight),
                          "gate_up": colmajor(gate_up * b.mlp_norm.weight),
                          "down": colmajor(b.mlp.down_proj.weight)})
        packs.append({"lm_head": colmajor(model.lm_head.weight)})
    model._decode_pack_cache = (key, packs)
    return packs
