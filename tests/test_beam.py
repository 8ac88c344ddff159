"""Beam search: greedy equivalence, exhaustive optimality on a tiny vocabulary, batching, eos, lengths, bans."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn as nn

from scratchlm.infer.beam import BeamConfig, BeamHypothesis, beam_search
from scratchlm.infer.generate import SamplingConfig, generate
from scratchlm.model.transformer import ModelConfig, Transformer

V = 50
# init_std is raised so a random model has clearly separated logits (no near-ties to flip on).
CFG = ModelConfig(vocab_size=V, block_size=64, n_layer=2, n_head=2, n_embd=32, init_std=0.1)
PROMPTS = [[1, 5, 9, 3], [1, 7], [1, 20, 30, 40, 11, 12, 3]]  # different lengths: left padding in a batch
PAD = 0


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


@pytest.fixture(scope="module")
def eos(model) -> int:
    """A token the model likes (greedy's first token after prompt 0), so that eos really ends hypotheses."""
    return generate(model, PROMPTS[:1], SamplingConfig(max_new_tokens=1, temperature=0.0))[0][0]


def logprob_by_forward(model: Transformer, prompt: list[int], tokens: list[int], eos: int | None) -> float:
    """Summed log probability of tokens (+ eos) after prompt, from one full forward pass without a cache."""
    out = tokens + ([eos] if eos is not None else [])
    seq = torch.tensor([prompt + out])
    with torch.no_grad():
        logp = model.logits(seq)[0].double().log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + i, tok]) for i, tok in enumerate(out))


def brute_force(model: Transformer, prompt: list[int], max_new: int, eos: int, length_penalty: float):
    """Every possible output of at most max_new tokens, best score first: (score, tokens, logprob, finished)."""
    vocab = model.cfg.vocab_size
    others = [t for t in range(vocab) if t != eos]
    dists: dict[tuple[int, ...], torch.Tensor] = {}
    with torch.no_grad():
        for n in range(max_new):
            for prefix in itertools.product(others, repeat=n):
                dists[prefix] = model.logits(torch.tensor([prompt + list(prefix)]))[0, -1].double().log_softmax(-1)
    out = []
    for n in range(max_new + 1):
        for prefix in itertools.product(others, repeat=n):
            lp = sum(float(dists[prefix[:i]][tok]) for i, tok in enumerate(prefix))
            if n < max_new:  # ends with eos
                total = lp + float(dists[prefix][eos])
                out.append((total / (n + 1) ** length_penalty, list(prefix), total, True))
            else:  # stopped by the length limit
                out.append((lp / n ** length_penalty, list(prefix), lp, False))
    return sorted(out, key=lambda r: r[0], reverse=True)


def has_repeated_ngram(seq: list[int], n: int) -> bool:
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


# ---- greedy ---------------------------------------------------------------------------------------------

def test_one_beam_equals_greedy_generate(model, eos):
    for eos_id in (eos, V - 1):  # an eos that ends some rows early, and one that (almost) never comes
        want = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12, temperature=0.0), pad_id=PAD,
                        eos_id=eos_id)
        got = beam_search(model, PROMPTS, BeamConfig(num_beams=1, max_new_tokens=12), pad_id=PAD, eos_id=eos_id)
        assert [r[0].tokens for r in got] == want
        for prompt, (hyp,) in zip(PROMPTS, got):
            assert hyp.finished == (len(hyp.tokens) < 12)
            assert hyp.logprob == pytest.approx(
                logprob_by_forward(model, prompt, hyp.tokens, eos_id if hyp.finished else None), abs=1e-4)
    assert any(len(t) < 12 for t in generate(model, PROMPTS, SamplingConfig(max_new_tokens=12, temperature=0.0),
                                                 eos_id=eos))  # the eos case is exercised


def test_one_beam_is_greedy_whatever_early_stopping(model, eos):
    base = beam_search(model, PROMPTS, BeamConfig(num_beams=1, max_new_tokens=10), pad_id=PAD, eos_id=eos)
    for early in (False, "never"):
        cfg = BeamConfig(num_beams=1, max_new_tokens=10, early_stopping=early)
        assert beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=eos) == base


# ---- scores and ranking ---------------------------------------------------------------------------------

@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -0.5, 2.0])
def test_results_sorted_and_scores_length_normalised(model, eos, length_penalty):
    cfg = BeamConfig(num_beams=4, max_new_tokens=10, num_return_sequences=4, length_penalty=length_penalty)
    results = beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=eos)
    assert len(results) == len(PROMPTS)
    for hyps in results:
        assert len(hyps) == 4 and all(isinstance(h, BeamHypothesis) for h in hyps)
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            length = len(h.tokens) + h.finished  # the eos counts
            assert h.score == pytest.approx(h.logprob / length ** length_penalty)
            assert eos not in h.tokens and len(h.tokens) <= 10


def test_scores_match_a_full_forward_without_cache(model, eos):
    cfg = BeamConfig(num_beams=4, max_new_tokens=12, num_return_sequences=4, length_penalty=0.7)
    results = beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=eos)
    finished = 0
    for prompt, hyps in zip(PROMPTS, results):
        for h in hyps:
            want = logprob_by_forward(model, prompt, h.tokens, eos if h.finished else None)
            assert abs(h.logprob - want) < 1e-4
            finished += h.finished
    assert finished > 0  # both kinds of hypotheses were checked


def tiny_model(seed: int) -> Transformer:
    """Vocabulary 6 (eos = 5): small enough to enumerate every output."""
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=6, block_size=16, n_layer=2, n_head=2, n_embd=32,
                                   init_std=0.3)).eval()


TINY_PROMPT, TINY_EOS = [0, 1, 2], 5
TINY_SEEDS = [0, 1, 4]  # seeds where greedy does not find the best output of 3 tokens


@pytest.mark.parametrize("seed", TINY_SEEDS)
@pytest.mark.parametrize("max_new, num_beams, early_stopping", [(2, 6, True), (3, 36, True), (3, 36, "never")])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_exhaustive_search_finds_the_best_outputs(seed, max_new, num_beams, early_stopping, length_penalty):
    """With enough beams to keep every prefix (6 for 2 tokens; 5 * 5 running + 5 eos candidates for 3 tokens),
    beam search is exhaustive: its hypotheses are the brute-force top list (and the best beats greedy)."""
    tiny = tiny_model(seed)
    best = brute_force(tiny, TINY_PROMPT, max_new, TINY_EOS, length_penalty)
    cfg = BeamConfig(num_beams=num_beams, max_new_tokens=max_new, length_penalty=length_penalty,
                     early_stopping=early_stopping, num_return_sequences=6)
    (hyps,) = beam_search(tiny, [TINY_PROMPT], cfg, pad_id=PAD, eos_id=TINY_EOS)
    assert [h.tokens for h in hyps] == [r[1] for r in best[:6]]
    for h, (score, _, logprob, finished) in zip(hyps, best):
        assert h.score == pytest.approx(score, abs=1e-5)
        assert h.logprob == pytest.approx(logprob, abs=1e-5)
        assert h.finished == finished
    greedy = generate(tiny, [TINY_PROMPT], SamplingConfig(max_new_tokens=max_new, temperature=0.0),
                      eos_id=TINY_EOS)[0]
    greedy_logprob = logprob_by_forward(tiny, TINY_PROMPT, greedy, TINY_EOS if len(greedy) < max_new else None)
    if length_penalty == 0.0:
        assert hyps[0].logprob >= greedy_logprob - 1e-5  # cached vs full forward: float noise only
        if max_new == 3:
            assert hyps[0].logprob > greedy_logprob + 1e-3  # these seeds were picked so greedy misses it


@pytest.mark.parametrize("seed", TINY_SEEDS)
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_as_many_beams_as_tokens_finds_the_best_of_three(seed, length_penalty):
    """num_beams = vocabulary for 3 tokens is not exhaustive in general (36 prefixes of 2 tokens), but on
    these models it finds the brute-force optimum, which greedy misses."""
    tiny = tiny_model(seed)
    best = brute_force(tiny, TINY_PROMPT, 3, TINY_EOS, length_penalty)[0]
    cfg = BeamConfig(num_beams=6, max_new_tokens=3, length_penalty=length_penalty, early_stopping="never")
    ((hyp,),) = beam_search(tiny, [TINY_PROMPT], cfg, pad_id=PAD, eos_id=TINY_EOS)
    assert (hyp.tokens, hyp.finished) == (best[1], best[3])
    assert hyp.logprob == pytest.approx(best[2], abs=1e-5)


def test_length_penalty_moves_the_best_output_towards_longer_ones():
    """With an exact search, a larger length_penalty never picks a shorter best output (and here it changes)."""
    tiny, max_new = tiny_model(3), 3
    lengths = []
    for lp in (-4.0, -1.0, 0.0, 1.0, 4.0):
        cfg = BeamConfig(num_beams=36, max_new_tokens=max_new, length_penalty=lp, early_stopping="never")
        ((best,),) = beam_search(tiny, [TINY_PROMPT], cfg, pad_id=PAD, eos_id=TINY_EOS)
        assert best.tokens == brute_force(tiny, TINY_PROMPT, max_new, TINY_EOS, lp)[0][1]
        lengths.append(len(best.tokens) + best.finished)
    assert lengths == sorted(lengths)
    assert lengths[0] < lengths[-1]  # [eos] alone wins at -4, three tokens win at +4


# ---- batching, lengths, context ---------------------------------------------------------------------------

def test_batched_equals_one_by_one(model, eos):
    cfg = BeamConfig(num_beams=3, max_new_tokens=10, num_return_sequences=3)
    batched = beam_search(model, PROMPTS, cfg, pad_id=3, eos_id=eos)
    for prompt, hyps in zip(PROMPTS, batched):
        (alone,) = beam_search(model, [prompt], cfg, pad_id=PAD, eos_id=eos)
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert [h.finished for h in hyps] == [h.finished for h in alone]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in alone], abs=1e-5)


def test_max_length_ratio_limits_each_row(model, eos):
    # min_new_tokens above every limit: eos is never allowed, so every output stops at its row's limit
    cfg = BeamConfig(num_beams=2, max_new_tokens=20, min_new_tokens=20, num_return_sequences=2)
    prompts = [[1, 5, 9, 3], [1, 20, 30, 40, 11, 12, 3, 8, 8, 2]]
    results = beam_search(model, prompts, cfg, pad_id=PAD, eos_id=eos, max_length_ratio=0.5, max_length_offset=1)
    for prompt, hyps in zip(prompts, results):
        limit = int(len(prompt) * 0.5) + 1  # 3 and 6
        assert all(len(h.tokens) == limit and not h.finished for h in hyps)
    capped = beam_search(model, prompts, BeamConfig(num_beams=2, max_new_tokens=4, min_new_tokens=4), pad_id=PAD,
                         eos_id=eos, max_length_ratio=0.5, max_length_offset=1)
    assert [len(r[0].tokens) for r in capped] == [3, 4]  # max_new_tokens still caps the ratio


def test_min_new_tokens_delays_eos(model, eos):
    cfg = BeamConfig(num_beams=3, max_new_tokens=10, min_new_tokens=4, num_return_sequences=3)
    for hyps in beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=eos):
        assert all(len(h.tokens) >= 4 for h in hyps)


def test_context_length_is_respected_per_row():
    torch.manual_seed(1)
    short = Transformer(ModelConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32, init_std=0.1))
    prompts = [list(range(1, 15)), [1, 2, 3]]  # 14 tokens leave room for 2 in a context of 16
    cfg = BeamConfig(num_beams=2, max_new_tokens=10, min_new_tokens=10, num_return_sequences=2)
    batched = beam_search(short, prompts, cfg, pad_id=PAD, eos_id=V - 1)
    assert [len(r[0].tokens) for r in batched] == [2, 10]
    assert short.rope_cos.shape[0] == 16  # no position past the context was ever computed
    for prompt, hyps in zip(prompts, batched):
        (alone,) = beam_search(short, [prompt], cfg, pad_id=PAD, eos_id=V - 1)
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
    with pytest.raises(ValueError, match=r"prompt 1 has 16 tokens.*block_size\) 16"):
        beam_search(short, [[1, 2], list(range(16))], cfg, pad_id=PAD, eos_id=V - 1)


# ---- eos, n-gram ban, modes -------------------------------------------------------------------------------

def forced_eos_model(model: Transformer, eos_id: int) -> Transformer:
    forced = copy.deepcopy(model)
    head = nn.Linear(CFG.n_embd, V, bias=True)
    head.weight = forced.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[eos_id] = 50.0
    forced.lm_head = head
    return forced


@pytest.mark.parametrize("num_beams", [1, 4])
def test_eos_first_gives_an_empty_hypothesis(model, num_beams):
    forced = forced_eos_model(model, eos_id=7)
    cfg = BeamConfig(num_beams=num_beams, max_new_tokens=8, num_return_sequences=num_beams)
    for hyps in beam_search(forced, PROMPTS, cfg, pad_id=PAD, eos_id=7):
        best = hyps[0]
        assert best.tokens == [] and best.finished
        assert -1e-3 < best.logprob <= 0.0 and best.score == pytest.approx(best.logprob)
        assert all(7 not in h.tokens for h in hyps)
    # cfg.eos_id overrides the eos_id argument; min_new_tokens forbids the early eos
    cfg = BeamConfig(num_beams=num_beams, max_new_tokens=8, min_new_tokens=2, eos_id=7)
    for (best,) in beam_search(forced, PROMPTS, cfg, pad_id=PAD, eos_id=V - 1):
        assert len(best.tokens) == 2 and best.finished


def test_no_repeat_ngram_size_two(model, eos):
    cfg = BeamConfig(num_beams=4, max_new_tokens=24, num_return_sequences=4, eos_id=V - 1)
    plain = beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=eos)
    assert any(has_repeated_ngram(h.tokens, 2) for hyps in plain for h in hyps)  # the ban has work to do
    for num_beams in (1, 4):
        cfg = BeamConfig(num_beams=num_beams, max_new_tokens=24, num_return_sequences=num_beams, eos_id=V - 1,
                         no_repeat_ngram_size=2)
        for prompt, hyps in zip(PROMPTS, beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=eos)):
            for h in hyps:
                assert not has_repeated_ngram(h.tokens, 2)
                want = logprob_by_forward(model, prompt, h.tokens, V - 1 if h.finished else None)
                assert abs(h.logprob - want) < 1e-4


def test_eval_mode_is_used_and_restored(eos):
    torch.manual_seed(0)
    noisy = Transformer(ModelConfig(**{**vars(CFG), "dropout": 0.3}))
    cfg = BeamConfig(num_beams=3, max_new_tokens=6, num_return_sequences=3)
    want = beam_search(noisy.eval(), PROMPTS, cfg, pad_id=PAD, eos_id=eos)
    noisy.train()
    assert beam_search(noisy, PROMPTS, cfg, pad_id=PAD, eos_id=eos) == want  # no dropout during the search
    assert noisy.training
    assert beam_search(noisy, [], cfg, pad_id=PAD, eos_id=eos) == []


# ---- validation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("num_beams", 0), ("num_beams", 2.0), ("max_new_tokens", 0), ("min_new_tokens", -1),
    ("min_new_tokens", 200), ("length_penalty", float("nan")), ("length_penalty", "1"),
    ("early_stopping", "sometimes"), ("early_stopping", 1), ("no_repeat_ngram_size", -1), ("eos_id", -3),
    ("num_return_sequences", 0), ("num_return_sequences", 5),
])
def test_invalid_config_names_the_field(model, field, value):
    cfg = BeamConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"BeamConfig\.{field}"):
        cfg.validate()
    with pytest.raises(ValueError, match=rf"BeamConfig\.{field}"):
        beam_search(model, PROMPTS, cfg, pad_id=PAD, eos_id=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_length_ratio=0.0), "max_length_ratio"), (dict(max_length_ratio=float("inf")), "max_length_ratio"),
    (dict(max_length_offset=1.5), "max_length_offset"), (dict(eos_id=V), "eos_id"), (dict(pad_id=-1), "pad_id"),
])
def test_invalid_arguments_name_the_argument(model, kwargs, match):
    args = {"pad_id": PAD, "eos_id": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        beam_search(model, PROMPTS, BeamConfig(), **args)


def test_bad_prompts(model):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        beam_search(model, [[1], []], BeamConfig(), pad_id=PAD, eos_id=2)
    with pytest.raises(ValueError, match="outside"):
        beam_search(model, [[1, V]], BeamConfig(), pad_id=PAD, eos_id=2)


@pytest.mark.parametrize("with_copy", [False, True])
def test_anti_lm_decoding_subtracts_the_source_free_model_for_the_first_tokens(with_copy):
    """Greedy MMI-antiLM: each of the first anti_lm_tokens tokens is the argmax of log p(y|prompt) -
    w * log p(y|prompt without its source), both from a full forward pass; later tokens follow p(y|prompt)."""
    torch.manual_seed(1)
    m = Transformer(CFG).eval()
    if with_copy:
        m.add_copy_head(8)
        m.eval()
    w, n, start = 0.5, 2, 1  # prompts: [1] is the prefix, the last token plays <|sep|>

    def logp(seq, prompt):
        with torch.no_grad():
            h = m(torch.tensor([seq]))[0, -1:]
            logits = m.lm_head(h)
            if not with_copy:
                return logits[0].log_softmax(-1)
            full = m(torch.tensor([seq]))[0]
            src = torch.zeros(len(seq), dtype=torch.bool)
            src[start:len(prompt) - 1] = True
            return m.copy_head.log_mixture(h, logits, m.copy_head.keys(full)[None], torch.tensor([seq]), src[None])[0]

    cfg = BeamConfig(num_beams=1, max_new_tokens=5, anti_lm_weight=w, anti_lm_tokens=n)
    outs = beam_search(m, PROMPTS, cfg, pad_id=PAD, eos_id=V - 1, source_starts=[start] * len(PROMPTS))
    plain = beam_search(m, PROMPTS, BeamConfig(num_beams=1, max_new_tokens=5), pad_id=PAD, eos_id=V - 1,
                        source_starts=[start] * len(PROMPTS))
    assert outs != plain  # the term changes something on these prompts
    for p, hyp in zip(PROMPTS, outs):
        bare = p[:start] + p[-1:]
        seq, out = list(p), []
        for i, tok in enumerate(hyp[0].tokens):
            score = logp(seq, p)
            if i < n:
                score = score - w * logp(bare + out, bare)
            assert int(score.argmax()) == tok
            seq.append(tok)
            out.append(tok)
    with pytest.raises(ValueError, match="anti_lm_weight"):
        BeamConfig(anti_lm_weight=1.5).validate()
