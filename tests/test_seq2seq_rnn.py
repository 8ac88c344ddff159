"""Recurrent encoder-decoder: shapes, padding never leaks, masked attention, loss, a tiny task learnt, decoding."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from scratchlm.baselines.seq2seq_rnn import (
    ATTENTIONS,
    CELLS,
    Seq2SeqRNN,
    Seq2SeqRNNConfig,
    Seq2SeqRNNLoss,
    make_batch,
)
from scratchlm.infer.beam import BeamConfig

VOCAB, PAD, BOS, EOS = 20, 0, 1, 2


def config(**kw) -> Seq2SeqRNNConfig:
    return Seq2SeqRNNConfig(**{"vocab_size": VOCAB, "n_embd": 12, "hidden_size": 12, "dropout": 0.3,
                               "pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "max_source_len": 16,
                               "max_target_len": 16, **kw})


def model(seed: int = 0, **kw) -> Seq2SeqRNN:
    torch.manual_seed(seed)
    return Seq2SeqRNN(config(**kw)).eval()


def pairs(seed: int = 1, n: int = 4) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    lengths = [(5, 3), (9, 6), (1, 1), (7, 4), (3, 8)]
    return [([rng.randrange(3, VOCAB) for _ in range(s)], [rng.randrange(3, VOCAB) for _ in range(t)])
            for s, t in lengths[:n]]


ALL = [(c, a) for c in CELLS for a in ATTENTIONS]


@pytest.mark.parametrize("cell,attention", ALL)
def test_shapes(cell, attention):
    for feed, bidi, layers in ((False, True, 1), (True, False, 2)):
        m = model(cell=cell, attention=attention, input_feeding=feed, bidirectional_encoder=bidi, num_layers=layers)
        b = make_batch(pairs(), m.cfg)
        B, S = b["src"].shape
        T = b["tgt_in"].shape[1]
        with torch.no_grad():
            logits, weights = m(b["src"], b["src_mask"], b["tgt_in"], return_attention=True)
        assert logits.shape == (B, T, VOCAB)
        assert torch.isfinite(logits).all()
        assert (weights is None) == (attention == "none")
        if weights is not None:
            assert weights.shape == (B, T, S)
        assert m.num_params() == sum(p.numel() for p in m.parameters()) > 0


def alone_logits(m: Seq2SeqRNN, src: list[int], tgt: list[int]) -> torch.Tensor:
    b = make_batch([(src, tgt)], m.cfg)
    with torch.no_grad():
        return m(b["src"], None, b["tgt_in"])[0]


@pytest.mark.parametrize("cell,attention", ALL)
@pytest.mark.parametrize("feed", [False, True])
def test_padding_does_not_change_a_rows_logits(cell, attention, feed):
    m = model(cell=cell, attention=attention, input_feeding=feed, num_layers=2)  # eval: dropout off
    ps = pairs()
    b = make_batch(ps, m.cfg)
    src, mask = b["src"], b["src_mask"]
    S = src.shape[1] + 3
    wide = torch.full((len(ps), S), 7)  # garbage (not pad_id) in the padding, 3 extra columns
    wide_mask = torch.zeros(len(ps), S, dtype=torch.long)
    left = torch.full((len(ps), S), PAD)
    left_mask = torch.zeros_like(wide_mask)
    for i, (s, _) in enumerate(ps):
        wide[i, :len(s)] = torch.tensor(s)
        wide_mask[i, :len(s)] = 1
        left[i, S - len(s):] = torch.tensor(s)
        left_mask[i, S - len(s):] = 1
    with torch.no_grad():
        batched = [m(src, mask, b["tgt_in"]), m(src, None, b["tgt_in"]), m(wide, wide_mask, b["tgt_in"]),
                   m(left, left_mask, b["tgt_in"])]
    for i, (s, t) in enumerate(ps):
        expected = alone_logits(m, s, t)
        for got in batched:
            torch.testing.assert_close(got[i, :len(t) + 1], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_attention_is_zero_on_padding_and_sums_to_one(cell, attention):
    m = model(cell=cell, attention=attention)
    b = make_batch(pairs(), m.cfg)
    real = b["src_mask"].bool()
    left = torch.flip(b["src"], dims=[1])  # left-padded (and reversed) sources
    for src, mask in ((b["src"], real), (left, real.flip(1))):
        with torch.no_grad():
            _, w = m(src, mask, b["tgt_in"], return_attention=True)
        assert (w.masked_select(~mask[:, None, :].expand_as(w)) == 0).all()
        assert (w.masked_select(mask[:, None, :].expand_as(w)) > 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell,attention", ALL)
def test_step_by_step_decoding_matches_teacher_forcing(cell, attention):
    for feed in (False, True):
        m = model(cell=cell, attention=attention, input_feeding=feed, num_layers=2)
        b = make_batch(pairs(), m.cfg)
        with torch.no_grad():
            full = m(b["src"], b["src_mask"], b["tgt_in"])
            memory, state = m.encode(b["src"], b["src_mask"])
            steps = []
            for t in range(b["tgt_in"].shape[1]):
                logits, state = m.step(b["tgt_in"][:, t], state, memory)
                steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)


def test_loss_ignores_minus_100_and_counts_target_tokens():
    m = model(cell="lstm", dropout=0.0).train()
    b = make_batch(pairs(), m.cfg)
    tgt = b["tgt_out"]
    loss, count = m.loss(b)
    assert int(count) == sum(len(t) + 1 for _, t in pairs()) == int((tgt != -100).sum())
    logits = m(b["src"], b["src_mask"], b["tgt_in"])
    keep = tgt != -100
    manual = F.cross_entropy(logits[keep], tgt[keep], reduction="sum")
    torch.testing.assert_close(loss, manual)
    # ignoring a real position removes exactly its term
    b2 = dict(b, tgt_out=tgt.clone())
    b2["tgt_out"][1, 2] = -100
    loss2, count2 = m.loss(b2)
    term = F.cross_entropy(logits[1, 2][None], tgt[1, 2][None], reduction="sum")
    torch.testing.assert_close(loss2, loss - term, atol=1e-4, rtol=0)
    assert int(count2) == int(count) - 1
    # the loss module a Task hands to the trainer; gradients reach every parameter
    loss3, count3 = Seq2SeqRNNLoss(m)(b)
    loss3.backward()
    torch.testing.assert_close(loss3, loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def reverse_pairs(rng: random.Random, n: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for _ in range(n):
        s = [rng.randrange(3, VOCAB) for _ in range(rng.randint(3, 6))]
        out.append((s, s[::-1]))
    return out


@pytest.fixture(scope="module")
def trained() -> tuple[Seq2SeqRNN, list[tuple[list[int], list[int]]]]:
    """A tiny GRU + Bahdanau model taught to reverse 3-6 tokens (200 Adam steps, a few seconds)."""
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = config(n_embd=32, hidden_size=32, dropout=0.0, max_source_len=8, max_target_len=8)
    m = Seq2SeqRNN(cfg)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(200):
        loss, n = m.loss(make_batch(reverse_pairs(rng, 32), cfg))
        opt.zero_grad()
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return m, reverse_pairs(random.Random(123), 100)


def test_tiny_reverse_task_is_learnt(trained):
    m, test = trained
    b = make_batch(test, m.cfg)
    m.train()
    out = m.greedy(b["src"], b["src_mask"])
    assert m.training  # the training flag is restored
    exact = sum(o == t for o, (_, t) in zip(out, test)) / len(test)
    assert exact > 0.9, exact
    hyps = m.beam(b["src"], b["src_mask"], BeamConfig(num_beams=3))
    assert sum(h[0].tokens == t for h, (_, t) in zip(hyps, test)) / len(test) > 0.9


def test_beam_with_one_beam_is_greedy(trained):
    m, test = trained
    b = make_batch(test, m.cfg)
    for limit in (8, 4):  # some outputs end with eos, with limit 4 some stop at the limit
        greedy = m.greedy(b["src"], b["src_mask"], max_new_tokens=limit)
        hyps = m.beam(b["src"], b["src_mask"], BeamConfig(num_beams=1, max_new_tokens=limit))
        assert [h[0].tokens for h in hyps] == greedy
        assert any(h[0].finished for h in hyps) and (limit == 8 or not all(h[0].finished for h in hyps))
    for seed in range(3):  # an untrained model, every attention type
        um = model(seed, attention=ATTENTIONS[seed], cell=CELLS[seed % 2], input_feeding=seed == 1)
        ub = make_batch(pairs(seed, n=5), um.cfg)
        hyps = um.beam(ub["src"], ub["src_mask"], BeamConfig(num_beams=1, max_new_tokens=6))
        assert [h[0].tokens for h in hyps] == um.greedy(ub["src"], ub["src_mask"], 6)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -0.5])
def test_beam_hypotheses_are_sorted_and_scored(length_penalty):
    m = model(1, cell="gru", attention="luong", input_feeding=True)
    with torch.no_grad():
        m.out.bias[EOS] += 2.0  # make eos likely, so hypotheses of several lengths finish
    b = make_batch(pairs(2, n=3), m.cfg)
    cfg = BeamConfig(num_beams=4, num_return_sequences=4, max_new_tokens=6, length_penalty=length_penalty,
                     early_stopping="never")
    results = m.beam(b["src"], b["src_mask"], cfg)
    assert len(results) == 3
    for i, hyps in enumerate(results):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            length = len(h.tokens) + (1 if h.finished else 0)
            assert h.score == pytest.approx(h.logprob / length ** length_penalty)
            # the logprob is the model's own (teacher-forced) log probability of the tokens and the eos
            target = h.tokens + ([EOS] if h.finished else [])
            tgt_in = torch.tensor([[BOS, *target[:-1]]])
            with torch.no_grad():
                lp = m(b["src"][i:i + 1], b["src_mask"][i:i + 1], tgt_in).log_softmax(-1)[0]
            assert h.logprob == pytest.approx(lp[torch.arange(len(target)), target].sum().item(), abs=1e-4)


@pytest.mark.parametrize("field,value", [
    ("cell", "rnn"), ("attention", "dot"), ("vocab_size", 0), ("n_embd", 1.5), ("hidden_size", -1),
    ("num_layers", 0), ("bidirectional_encoder", "yes"), ("input_feeding", 1), ("dropout", 1.0),
    ("tie_embeddings", None), ("pad_id", VOCAB), ("bos_id", -1), ("eos_id", BOS), ("max_source_len", 0),
    ("max_target_len", True),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        config(**{field: value}).validate()
    with pytest.raises(ValueError, match=field):
        Seq2SeqRNN(config(**{field: value}))


def test_config_round_trip_and_tying():
    m = model(cell="lstm", attention="luong", input_feeding=True, num_layers=2, bidirectional_encoder=False)
    d = json.loads(json.dumps(m.config_dict()))
    again = Seq2SeqRNN.from_config_dict(d).eval()
    assert again.cfg == m.cfg
    again.load_state_dict(m.state_dict())
    b = make_batch(pairs(), m.cfg)
    with torch.no_grad():
        torch.testing.assert_close(again(b["src"], b["src_mask"], b["tgt_in"]), m(b["src"], b["src_mask"],
                                                                                   b["tgt_in"]))
    with pytest.raises(ValueError, match="unknown Seq2SeqRNNConfig field"):
        Seq2SeqRNNConfig.from_dict({**d["seq2seq_rnn"], "heads": 2})
    assert m.output_tied and m.src_embed is m.tgt_embed
    assert not model(hidden_size=16).output_tied  # shapes do not allow it
    untied = model(tie_embeddings=False)
    assert untied.src_embed is not untied.tgt_embed and not untied.output_tied
    assert untied.num_params() == model().num_params() + 2 * VOCAB * 12  # a second embedding, an output weight


def test_bad_inputs_are_explained():
    m = model()
    b = make_batch(pairs(), m.cfg)
    with pytest.raises(ValueError, match="no real tokens"):
        m(b["src"], torch.zeros_like(b["src_mask"]), b["tgt_in"])
    with pytest.raises(ValueError, match="max_source_len"):
        m(torch.full((1, 17), 5), None, b["tgt_in"][:1])
    with pytest.raises(ValueError, match="max_target_len"):
        m(b["src"], b["src_mask"], torch.full((len(pairs()), 17), 5))
    with pytest.raises(ValueError, match="vocabulary"):
        m(b["src"], b["src_mask"], b["tgt_in"] + VOCAB)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.greedy(b["src"], b["src_mask"], max_new_tokens=0)
