"""Generation engine: cache/no-cache and batched/alone equivalence, logits helpers, stops, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from scratchlm.infer.generate import (
    SamplingConfig,
    _StopStringFilter,
    apply_repetition_penalty,
    banned_ngram_tokens,
    generate,
    generate_text,
    stream,
    top_k_filter,
    top_p_filter,
)
from scratchlm.model.transformer import KVCache, ModelConfig, Transformer

# init_std is raised so a random model has clearly separated logits (no near-ties for greedy to flip on).
CFG = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, init_std=0.1)
PROMPTS = [[5, 17, 3, 88, 41, 9, 12], [7], [60, 2, 33, 19], [44, 44, 1, 90, 23, 56, 71, 8, 30, 11]]


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


def greedy(n: int, **kw) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=n, temperature=0.0, **kw)


def reference_greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """Plain loop: full forward of one unpadded sequence per step, argmax of the last logits."""
    seq = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            seq.append(int(model.logits(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


# ---- model-level cache path ---------------------------------------------------------------------------

def test_kv_cache_logits_match_full_forward(model):
    torch.manual_seed(1)
    idx = torch.randint(0, CFG.vocab_size, (2, 12))
    with torch.no_grad():
        full = model.logits(idx)
        cache = KVCache(CFG, 2, 12, "cpu", torch.float32)
        parts = []
        for a, b in [(0, 5), (5, 8), (8, 9), (9, 12)]:  # prefill, chunked prefill, single steps
            parts.append(model.logits(idx[:, a:b], cache=cache))
            cache.pos = b
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_decode_pack_serves_cached_inference_only_and_matches_the_modules(model):
    """The packed decode weights (fused q/k/v and gate/up, column-major) give the modules' logits, follow
    in-place weight changes, and are not used for training, autograd, LoRA layers or calls without a cache."""
    import copy

    from scratchlm.infer.decode_pack import DecodeCache, decode_pack, forward, logits
    from scratchlm.model.lora import LoraConfig, inject_lora

    m = copy.deepcopy(model)
    idx = torch.randint(0, CFG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3))

    def cached_logits():
        cache = DecodeCache(m, 2, 9, "cpu", torch.float32)
        first = logits(m, forward(m, idx[:, :8], cache=cache), cache)
        cache.pos = 8
        return torch.cat([first, logits(m, forward(m, idx[:, 8:], cache=cache), cache)], dim=1)

    with torch.inference_mode():
        assert decode_pack(m) is not None
        torch.testing.assert_close(cached_logits(), m.logits(idx), atol=1e-5, rtol=1e-5)
        m.layers[1].mlp.up_proj.weight.mul_(1.5)  # in place: the pack must be remade
        m.lm_head.weight.add_(0.01)
        torch.testing.assert_close(cached_logits(), m.logits(idx), atol=1e-5, rtol=1e-5)
        m.layers[0].attn_norm.weight.mul_(0.5)  # the norm gains are folded into the pack too
        m.layers[1].mlp_norm.weight.add_(0.25)
        torch.testing.assert_close(cached_logits(), m.logits(idx), atol=1e-5, rtol=1e-5)
        # a generation looks the pack up once, on its cache, not at every step
        cache = DecodeCache(m, 2, 9, "cpu", torch.float32)
        forward(m, idx[:, :8], cache=cache)
        assert cache.packs is decode_pack(m)
    assert decode_pack(m) is None  # autograd on
    with torch.no_grad():
        m.train()
        assert decode_pack(m) is None
        m.eval()
        inject_lora(m, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        assert decode_pack(m) is None


# ---- equivalences -------------------------------------------------------------------------------------

def test_temperature_zero_matches_reference_loop(model):
    for p in PROMPTS[:2]:
        assert generate(model, [p], greedy(12)) == [reference_greedy(model, p, 12)]


def test_greedy_cache_equals_no_cache(model):
    with_cache = generate(model, PROMPTS, greedy(16))
    without = generate(model, PROMPTS, greedy(16, use_cache=False))
    assert with_cache == without
    assert all(len(r) == 16 for r in with_cache)


def test_batched_left_padded_equals_alone(model):
    batched = generate(model, PROMPTS, greedy(16), pad_id=3)
    alone = [generate(model, [p], greedy(16))[0] for p in PROMPTS]
    assert batched == alone


def test_top_k_1_equals_greedy(model):
    sampled = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=1.0, top_k=1, seed=0))
    assert sampled == generate(model, PROMPTS, greedy(10))


def test_seed_reproducibility(model):
    cfg = SamplingConfig(max_new_tokens=20, temperature=1.5, top_p=0.95, seed=123)
    a = generate(model, PROMPTS, cfg)
    assert generate(model, PROMPTS, cfg) == a
    assert generate(model, PROMPTS, SamplingConfig(max_new_tokens=20, temperature=1.5, top_p=0.95,
                                                   seed=124)) != a


# ---- logits helpers -----------------------------------------------------------------------------------

def test_top_p_keeps_minimal_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log().unsqueeze(0)
    for p, kept in [(0.4, {1}), (0.6, {1, 3}), (0.79, {1, 3}), (0.9, {1, 3, 2}), (0.97, {0, 1, 2, 3}),
                    (1.0, {0, 1, 2, 3})]:
        out = top_p_filter(logits, p)[0]
        assert set(torch.isfinite(out).nonzero().flatten().tolist()) == kept, p
        assert torch.equal(out[list(kept)], logits[0, list(kept)])  # survivors unchanged


def test_top_k_filter():
    out = top_k_filter(torch.tensor([[0.1, 3.0, -1.0, 2.0]]), 2)
    assert torch.isinf(out).tolist() == [[True, False, True, False]]


def test_repetition_penalty_positive_and_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # both seen tokens lowered; unseen untouched


def test_banned_ngram_tokens():
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]
    assert banned_ngram_tokens([5, 6, 5, 7, 5], 2) == [6, 7]
    assert banned_ngram_tokens([4, 9, 4], 1) == [4, 9]
    assert banned_ngram_tokens([1, 2, 3], 3) == []  # prefix (2, 3) never seen before
    assert banned_ngram_tokens([1], 3) == []


def test_no_repeat_ngram_in_generation(model):
    n = 2
    for p, new in zip(PROMPTS, generate(model, PROMPTS, greedy(20, no_repeat_ngram_size=n))):
        seq = p + new
        # prompt bigrams may repeat among themselves, but no generated token may complete a seen bigram
        for t in range(len(p), len(seq)):
            assert seq[t] not in banned_ngram_tokens(seq[:t], n)


# ---- stopping -----------------------------------------------------------------------------------------

def test_stop_token_ends_row(model):
    full = generate(model, PROMPTS, greedy(16))
    stop = full[0][2]
    expected = [row[:row.index(stop)] if stop in row else row for row in full]
    assert generate(model, PROMPTS, greedy(16), eos_id=stop) == expected
    assert generate(model, PROMPTS, greedy(16, stop_token_ids=(stop,))) == expected
    assert len(expected[0]) == full[0].index(stop) < 16


def test_callback_streams_and_can_stop_a_row(model):
    seen: list[tuple[int, int]] = []

    def cb(row, tok):
        seen.append((row, tok))
        return row == 1 and sum(r == 1 for r, _ in seen) == 3

    out = generate(model, PROMPTS, greedy(8), callback=cb)
    assert len(out[1]) == 3 and out[1] == generate(model, PROMPTS, greedy(8))[1][:3]
    for row, toks in enumerate(out):
        assert [t for r, t in seen if r == row] == toks


def test_stop_string_filter_holds_back_partial_matches():
    f = _StopStringFilter(["o w", "xyz"])
    assert f.push("Hel") == "Hel"
    assert f.push("lo") == "l"  # "o" might start "o w"
    assert f.push(" wa") == "" and f.stopped  # stop string found; it and what follows are dropped
    g = _StopStringFilter(["o w"])
    assert g.push("lo") + g.push("!") + g.flush() == "lo!"


# ---- errors, edges ------------------------------------------------------------------------------------

def test_max_length_error_names_both_numbers(model):
    with pytest.raises(ValueError, match=r"60 tokens.*max_new_tokens \(10\).*block_size\) 64"):
        generate(model, [[1] * 60, [2]], greedy(10))


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5),
                                 dict(max_new_tokens=-1), dict(top_k=0), dict(repetition_penalty=0.0),
                                 dict(temperature=math.nan), dict(no_repeat_ngram_size=-2)])
def test_validate_rejects(bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**bad).validate()


def test_edges(model):
    assert generate(model, PROMPTS, greedy(0)) == [[]] * len(PROMPTS)
    assert generate(model, [], greedy(5)) == []
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], greedy(5))
    with pytest.raises(ValueError, match="vocabulary"):
        generate(model, [[CFG.vocab_size]], greedy(5))
    with pytest.raises(ValueError, match="stop_strings"):
        generate(model, PROMPTS, greedy(5, stop_strings=("x",)))
    model.train()
    generate(model, PROMPTS[:1], greedy(2))
    assert model.training  # mode restored
    model.eval()


# ---- text (needs the tokenizer module) ----------------------------------------------------------------

def test_stream_matches_generate_text_and_honours_stop_strings():
    tk_mod = pytest.importorskip("scratchlm.tokenizer")
    tok = tk_mod.train_tokenizer(["hello world, the quick brown fox jumps over the lazy dog"] * 4, 300)
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16,
                                init_std=0.1)).eval()
    cfg = greedy(24)
    text = generate_text(m, tok, ["hello"], cfg)[0]
    assert "".join(stream(m, tok, "hello", cfg)) == text
    assert len(text) >= 4  # seeded: long enough to pick a stop string from the middle
    stop = text[len(text) // 2:len(text) // 2 + 2]
    expected = text[:text.find(stop)]
    cfg = greedy(24, stop_strings=(stop,))
    assert "".join(stream(m, tok, "hello", cfg)) == expected
    assert generate_text(m, tok, ["hello", "the fox"], cfg)[0] == expected
