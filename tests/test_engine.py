"""The native decode engine (scratchlm.infer.engine): same tokens and logits as the PyTorch path, fp32 and int8,
batch 1 and padded batches, beam search; rebuilt packs after a weight change; off and fallback switches."""

from __future__ import annotations

import warnings

import pytest
import torch

from scratchlm.infer import engine
from scratchlm.infer.beam import BeamConfig, beam_search
from scratchlm.infer.decode_pack import DecodeCache
from scratchlm.infer.generate import SamplingConfig, generate
from scratchlm.infer.quantize import quantize_state
from scratchlm.model.int8 import apply_int8
from scratchlm.model.transformer import ModelConfig, Transformer

# Ragged sizes on purpose: head_dim 10 (5 rotary pairs), widths that are not multiples of the kernels' 4 rows or
# 8 lanes, so every tail path runs. init_std is raised so greedy has no near-ties to flip on.
CFG = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=40, mlp_hidden=70,
                  init_std=0.1)
PROMPTS = [[5, 17, 3, 88, 41, 9, 12], [7], [60, 2, 33, 19], [44, 44, 1, 90, 23, 56, 71, 8, 30, 11]]

pytestmark = pytest.mark.skipif(engine.library() is None, reason="no C compiler: the engine is off here")


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


@pytest.fixture(scope="module")
def int8_model(model) -> Transformer:
    state, info = quantize_state(model)
    q = Transformer(ModelConfig(**vars(CFG))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply_int8(q, state, info)
    return q


def _generate(model, prompts, monkeypatch, mode: str, n: int = 20):
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", mode)
    return generate(model, prompts, SamplingConfig(max_new_tokens=n, temperature=0.0), pad_id=0)


def test_greedy_tokens_match_the_torch_path_alone_and_padded(model, monkeypatch):
    for prompts in ([PROMPTS[0]], PROMPTS):
        assert _generate(model, prompts, monkeypatch, "native") == _generate(model, prompts, monkeypatch, "torch")


def test_step_logits_match_the_torch_path(model, monkeypatch):
    ids = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "native")
        cache = DecodeCache(model, 1, 32, "cpu", torch.float32)
        assert cache.engine is not None
        from scratchlm.infer.generate import last_logits

        valid = torch.ones(1, 9, dtype=torch.bool)
        last_logits(model, ids, valid[:, :7], 0, cache)
        native = [last_logits(model, torch.tensor([[t]]), valid[:, :8 + i], 7 + i, cache)
                  for i, t in enumerate([4, 9])]
        monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "torch")
        ref_cache = DecodeCache(model, 1, 32, "cpu", torch.float32)
        assert ref_cache.engine is None
        last_logits(model, ids, valid[:, :7], 0, ref_cache)
        ref = [last_logits(model, torch.tensor([[t]]), valid[:, :8 + i], 7 + i, ref_cache)
               for i, t in enumerate([4, 9])]
    for a, b in zip(native, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_beam_search_matches_the_torch_path(model, monkeypatch):
    cfg = BeamConfig(num_beams=3, max_new_tokens=12)
    out = {}
    for mode in ("native", "torch"):
        monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", mode)
        out[mode] = beam_search(model, PROMPTS, cfg, pad_id=0, eos_id=96)
    for a, b in zip(out["native"], out["torch"], strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_int8_runs_on_the_engine_with_the_dequantized_weights_math(model, int8_model, monkeypatch):
    """The engine reads int8 rows and scales directly; its logits equal fp32 math on the dequantized weights."""
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "native")
    deq = Transformer(ModelConfig(**vars(CFG))).eval()
    with torch.no_grad():
        for (name, mod) in int8_model.named_modules():
            if getattr(mod, "int8_weight", None) is not None and name != "lm_head":
                q, s = mod.int8_weight
                deq.get_submodule(name).weight.copy_(q.float() * s[:, None])
        deq.embed.weight.copy_(int8_model.embed.qweight.float() * int8_model.embed.scale[:, None])
        for name, p in int8_model.named_parameters():  # the norms
            deq.get_parameter(name).copy_(p)
    ids = torch.tensor([PROMPTS[3]])
    with torch.inference_mode():
        cache = DecodeCache(int8_model, 1, 32, "cpu", torch.float32)
        assert cache.engine is not None and cache.packs is None  # int8: the engine does the prefill too
        got = engine.forward(int8_model, cache.engine, ids, cache, 0)
        ref = deq.logits(ids)[:, -1]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert _generate(int8_model, PROMPTS, monkeypatch, "native") == _generate(deq, PROMPTS, monkeypatch, "torch")


def test_pack_is_rebuilt_after_a_weight_change(monkeypatch):
    torch.manual_seed(3)
    m = Transformer(CFG).eval()
    before = _generate(m, [PROMPTS[0]], monkeypatch, "native")
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(-1.3)
    assert _generate(m, [PROMPTS[0]], monkeypatch, "native") == _generate(m, [PROMPTS[0]], monkeypatch, "torch")
    assert _generate(m, [PROMPTS[0]], monkeypatch, "native") != before


def test_engine_is_off_where_it_does_not_apply(model, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "native")
    with torch.inference_mode():
        assert engine.pack(model) is not None
        model.train()
        try:
            assert engine.pack(model) is None  # training
        finally:
            model.eval()
    assert engine.pack(model) is None  # autograd on
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "fast")
    with pytest.raises(engine.EngineError, match="SCRATCHLM_DECODE_ENGINE='fast'"):
        engine.mode()


def test_a_failed_build_falls_back_with_one_warning(model, monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "_lib", None)
    monkeypatch.setattr(engine, "_lib_failed", None)
    monkeypatch.setenv("SCRATCHLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "auto")
    monkeypatch.setattr(engine, "_packs", type(engine._packs)())
    with pytest.warns(RuntimeWarning, match="decoding with PyTorch instead"):
        out = _generate(model, [PROMPTS[0]], monkeypatch, "auto")
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "torch")
    assert out == _generate(model, [PROMPTS[0]], monkeypatch, "torch")
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "native")
    with pytest.raises(engine.EngineError, match="could not be built"):
        engine.library()


def test_positions_outside_the_cache_are_an_error(model, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "native")
    with torch.inference_mode():
        cache = DecodeCache(model, 1, 8, "cpu", torch.float32)
        with pytest.raises(ValueError, match="out of range"):
            engine.forward(model, cache.engine, torch.tensor([[1, 2, 3]]), cache, 6)
