"""Export a language model to GGUF (llama.cpp) with the ``gguf`` package: Llama architecture + BPE tokenizer.

What llama.cpp needs beyond renaming:

* Q and K rows permuted. llama.cpp's ``llama`` architecture applies RoPE to adjacent pairs (GPT-J style);
  ours (like HF Llama) rotates halves. ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) regroups each
  head's rows ``reshape(n_head, 2, head_dim // 2, n_embd).swapaxes(1, 2)``, with ``n_head_kv`` for K; we do
  the same, so the two conventions compute the same attention scores.
* The tokenizer as ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE: the vocabulary in GPT-2's byte-to-
  unicode spelling, our merges, special tokens as CONTROL) and a pre-tokenizer type llama.cpp knows. Ours is
  not one of llama.cpp's: the nearest is ``llama-bpe`` (Llama 3), which matches it on text without digits
  and Han characters; it groups digits by 3 (ours by 2) and glues Han runs to neighbouring letters. Text that
  llama.cpp tokenizes itself can therefore get other ids for such characters; token ids fed directly (as the
  tests do) decode identically.
* The tied output head: no ``output.weight`` tensor, and llama.cpp reuses ``token_embd``.

Norms are always float32; matrices float32 (exact) or float16 (``dtype="f16"``, half the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..model.transformer import Transformer
from ..tokenizer import SPECIAL_TOKENS
from .common import ExportSource, check_exportable, resolve_lora

PRE_TOKENIZER = "llama-bpe"
DTYPES = ("f32", "f16")


def permute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> llama.cpp's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """GGUF tensor name -> weight, Q/K permuted."""
    cfg = model.cfg
    out = {"token_embd.weight": model.embed.weight, "output_norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["output.weight"] = model.lm_head.weight
    for i, layer in enumerate(model.layers):
        a, m = layer.attn, layer.mlp
        out.update({
            f"blk.{i}.attn_norm.weight": layer.attn_norm.weight,
            f"blk.{i}.attn_q.weight": permute_qk(a.q_proj.weight, cfg.n_head),
            f"blk.{i}.attn_k.weight": permute_qk(a.k_proj.weight, cfg.n_kv_head),
            f"blk.{i}.attn_v.weight": a.v_proj.weight,
            f"blk.{i}.attn_output.weight": a.o_proj.weight,
            f"blk.{i}.ffn_norm.weight": layer.mlp_norm.weight,
            f"blk.{i}.ffn_gate.weight": m.gate_proj.weight,
            f"blk.{i}.ffn_up.weight": m.up_proj.weight,
            f"blk.{i}.ffn_down.weight": m.down_proj.weight,
        })
    return {k: v.detach().float().cpu() for k, v in out.items()}


def _vocab(src: ExportSource, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    import gguf

    data = json.loads(src.tokenizer.backend.to_str())
    by_id = {i: t for t, i in src.tokenizer.backend.get_vocab(with_added_tokens=True).items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i < len(SPECIAL_TOKENS) else gguf.TokenType.NORMAL)
        else:  # embedding rows beyond the tokenizer (vocab rounded up): never produced by it
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges


def export_gguf(src: ExportSource, out: str | Path, *, lora: str | None = None, dtype: str = "f32") -> dict:
    """Write one ``.gguf`` file (``out`` is the file, or a folder that gets ``model.gguf``)."""
    check_exportable(src, "gguf")
    resolve_lora(src, "gguf", lora)
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"gguf dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    out = Path(out)
    path = out if out.suffix == ".gguf" else out / "model.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    model: Transformer = src.backbone
    cfg = model.cfg
    tok = src.tokenizer
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(src.folder.name if src.folder else "scratchlm")
    w.add_string("general.source.scratchlm_version", __version__)
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.mlp_hidden)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_kv_head)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    tokens, types, merges = _vocab(src, cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_sep_token_id(tok.sep_id)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    for name, t in gguf_tensors(model).items():
        a = t.numpy()
        if dtype == "f16" and a.ndim == 2:
            a = a.astype(np.float16)
        w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    notes = [f"tokenizer: byte-level BPE, pre-tokenizer '{PRE_TOKENIZER}' (the nearest llama.cpp knows; numbers "
             f"and Chinese may tokenize differently from scratchlm: feed token ids for exact equality)",
             "no BOS is added (add_bos_token=false), as scratchlm's own generate"]
    if dtype == "f32":
        notes.append("weights are float32; run llama.cpp with an f32 KV cache (type_k/type_v=0, --cache-type-k "
                     "f32) to reproduce our greedy tokens exactly")
    return {"format": "gguf", "path": str(path), "files": [str(path)],
            "load": f"llama_cpp.Llama(model_path={str(path)!r}) or llama-cli -m {path}", "notes": notes}
