"""`scratchlm export --format gguf`: the file's metadata and tensors (fast), and llama.cpp greedy-decoding it
to our tokens (slow, needs llama-cpp-python)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="gguf is not installed (pip install scratchlm[export])")

from test_export_hf import save_classifier  # noqa: E402

from scratchlm.export import ExportError, export, load_source  # noqa: E402
from scratchlm.export.gguf import PRE_TOKENIZER, export_gguf, permute_qk  # noqa: E402
from scratchlm.infer.generate import SamplingConfig, generate  # noqa: E402
from scratchlm.model.lora import LoraConfig, inject_lora, lora_modules  # noqa: E402

REAL_LM = Path(__file__).resolve().parents[1] / "runs" / "imdb_lm" / "model"


def _field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]]


def test_metadata_tensors_and_qk_permutation(tiny_lm_dir, tmp_path):
    info = export(tiny_lm_dir, "gguf", tmp_path / "m.gguf")
    src = load_source(tiny_lm_dir)
    cfg = src.model.cfg
    r = gguf.GGUFReader(info["path"])
    assert bytes(_field(r, "general.architecture")).decode() == "llama"
    assert bytes(_field(r, "tokenizer.ggml.model")).decode() == "gpt2"
    assert bytes(_field(r, "tokenizer.ggml.pre")).decode() == PRE_TOKENIZER
    assert int(_field(r, "llama.attention.head_count_kv")[0]) == cfg.n_kv_head
    assert int(_field(r, "tokenizer.ggml.eos_token_id")[0]) == src.tokenizer.eos_id
    assert len(r.fields["tokenizer.ggml.tokens"].data) == cfg.vocab_size
    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert len(tensors) == 2 + 9 * cfg.n_layer
    q = torch.from_numpy(np.array(tensors["blk.0.attn_q.weight"].data)).reshape(cfg.n_embd, cfg.n_embd)
    assert torch.equal(q, permute_qk(src.model.layers[0].attn.q_proj.weight, cfg.n_head))
    # the permutation only reorders each head's rows: undoing it gives our weight back
    unperm = q.reshape(cfg.n_head, cfg.head_dim // 2, 2, cfg.n_embd).swapaxes(1, 2).reshape(q.shape)
    assert torch.equal(unperm, src.model.layers[0].attn.q_proj.weight)


def test_classifier_is_refused_naming_the_field(prepared, tmp_path):
    folder = save_classifier(tmp_path / "clf", prepared.tokenizer)
    with pytest.raises(ExportError, match="classifier"):
        export(folder, "gguf", tmp_path / "clf.gguf")


def test_unmerged_lora_is_refused_then_merged(tiny_lm_dir, tmp_path):
    src = load_source(tiny_lm_dir)
    inject_lora(src.model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ExportError, match="unmerged LoRA.*--lora merge"):
        export_gguf(src, tmp_path / "refused.gguf")
    assert not (tmp_path / "refused.gguf").exists()
    info = export_gguf(src, tmp_path / "merged.gguf", lora="merge")
    assert not lora_modules(src.model) and Path(info["path"]).stat().st_size > 0


def last_logits(llama_cpp, llm) -> np.ndarray:
    """The logits after the last eval (llama-cpp-python keeps `scores` only with logits_all=True)."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)


def llama_greedy(path, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """Greedy tokens from llama.cpp fed token ids directly (f32 KV cache), and the prompt's last logits."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(prompt) + n + 8, n_threads=1, n_batch=64, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, seed=0)
    llm.eval(prompt)
    first = last_logits(llama_cpp, llm)
    out = []
    logits = first
    for _ in range(n):
        tok = int(np.argmax(logits))
        if tok == llm.token_eos():
            break
        out.append(tok)
        llm.eval([tok])
        logits = last_logits(llama_cpp, llm)
    llm.close()
    return out, first


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tiny", "imdb_lm"])
def test_llama_cpp_greedy_decodes_our_tokens(which, tiny_lm_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    folder = tiny_lm_dir if which == "tiny" else REAL_LM
    if not (folder / "model.safetensors").exists():
        pytest.skip(f"{folder} not found (a trained model: scratchlm pretrain --config imdb_lm)")
    info = export(folder, "gguf", tmp_path / "m.gguf")
    src = load_source(folder)
    text = "The film was a quiet, moving surprise" if which == "imdb_lm" else "First Citizen: Before we proceed"
    prompt = src.tokenizer.encode(text)
    n = min(48, src.model.cfg.block_size - len(prompt))
    want = generate(src.model, [prompt], SamplingConfig(max_new_tokens=n, temperature=0),
                    eos_id=src.tokenizer.eos_id)[0]
    got, first = llama_greedy(info["path"], prompt, n)
    with torch.no_grad():
        ours = src.model.logits(torch.tensor([prompt]))[0, -1].numpy()
    print(f"{which}: llama.cpp max |logit diff| {np.abs(first - ours).max():.2e}; tokens {got[:12]}...")
    assert np.abs(first - ours).max() < 1e-3
    assert len(want) > 0 and got == want


@pytest.mark.slow
def test_llama_cpp_tokenizes_plain_english_like_us(tiny_lm_dir, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    info = export(tiny_lm_dir, "gguf", tmp_path / "m.gguf")
    src = load_source(tiny_lm_dir)
    llm = llama_cpp.Llama(model_path=info["path"], n_ctx=64, n_threads=1, verbose=False)
    text = "First Citizen: Before we proceed any further, hear me speak. You are all resolved rather to die?"
    try:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == src.tokenizer.encode(text)
    finally:
        llm.close()
    assert os.path.getsize(info["path"]) > 0
