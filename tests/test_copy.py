"""The copy head (pointer-generator mixture): a distribution, the vocabulary's where there is no source, and the
mixture computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from scratchlm.model.copy import CopyHead


def test_log_mixture_is_the_pointer_generator_distribution():
    torch.manual_seed(0)
    head = CopyHead(16, 8)
    N, S, V = 3, 5, 11
    hidden, logits = torch.randn(N, 16), torch.randn(N, V)
    keys = head.keys(torch.randn(N, S, 16))
    ids = torch.randint(0, V, (N, S))
    ids[0, 1] = ids[0, 3]  # a source token seen twice gets both attentions
    mask = torch.ones(N, S, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2] = False  # no source at all
    lp = head.log_mixture(hidden, logits, keys, ids, mask)
    p = lp.exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(N))
    torch.testing.assert_close(p[2], logits[2].softmax(-1))
    g = torch.sigmoid(head.gate(hidden[0:1])).item()
    a = (head.query(hidden[0]) @ keys[0].T / math.sqrt(8)).softmax(-1)
    ref = g * logits[0].softmax(-1)
    for s in range(S):
        ref[ids[0, s]] += (1 - g) * a[s]
    torch.testing.assert_close(p[0], ref)
    lp.sum().backward()
    assert all(q.grad is not None for q in head.parameters())


def _copy_model(seed: int = 0):
    from conftest import tiny_model_config

    from scratchlm.model.transformer import Transformer

    torch.manual_seed(seed)
    model = Transformer(tiny_model_config(vocab_size=64))
    model.add_copy_head(8)
    with torch.no_grad():  # a gate that copies a good deal, so the copy half of the mixture matters
        model.copy_head.gate.bias.fill_(0.0)
    return model.eval()


def _examples(n: int = 3, seed: int = 0):
    from scratchlm.tasks.seq2seq import Example

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src = torch.randint(4, 64, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        tgt = [src[1], int(torch.randint(4, 64, (1,), generator=g)), src[0], 2]  # copies and a new token, <eos>
        out.append(Example([0, 1, *src, 3], tgt, source_start=2))
    return out


def test_training_loss_is_the_decoding_mixture_and_packing_changes_nothing():
    """The training loss (log space, targets only, packed rows) equals -log of the mixture decoding uses, taken
    at the targets of each example alone: the two code paths agree, and packed neighbours are never copied."""
    from scratchlm.tasks.seq2seq import Seq2SeqLoss, packed_batch

    model, exs = _copy_model(), _examples()
    loss_of = Seq2SeqLoss(model)
    with torch.no_grad():
        packed, count = loss_of(packed_batch(exs, [[0, 1, 2]], 64, pad_id=0))
        ref = 0.0
        for i, ex in enumerate(exs):
            alone, _ = loss_of(packed_batch(exs, [[i]], 64, pad_id=0))
            b = packed_batch(exs, [[i]], 64, pad_id=0)
            h = model(b["idx"])[0]
            src = b["source"][0]
            keys = model.copy_head.keys(h)
            n = len(ex.prompt) - 1
            rows = range(n, n + len(ex.target))
            lp = torch.stack([model.copy_head.log_mixture(h[t:t + 1], model.lm_head(h[t:t + 1]), keys[None],
                                                          b["idx"][0][None], src[None])[0, ex.target[t - n]]
                              for t in rows])
            torch.testing.assert_close(alone, -lp.sum(), rtol=1e-4, atol=1e-4)
            ref += float(alone)
    assert int(count) == sum(len(e.target) for e in exs)
    assert abs(float(packed) - ref) < 1e-3


def test_copy_loss_backward_is_finite_when_the_target_is_not_in_the_source():
    from scratchlm.tasks.seq2seq import Seq2SeqLoss, packed_batch

    model = _copy_model().train()
    loss, _ = Seq2SeqLoss(model)(packed_batch(_examples(4, seed=1), [[0, 1], [2, 3]], 64, pad_id=0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.copy_head.query.weight.grad.abs().sum() > 0


def test_cached_beam_decoding_matches_the_mixture_recomputed_from_scratch():
    """Greedy decoding with the KV cache, left padding and copy keys from the prefill picks, at every step, the
    argmax of the mixture computed by a full forward pass over prompt + output (no cache)."""
    from scratchlm.infer.beam import BeamConfig, beam_search

    model = _copy_model(seed=3)
    prompts = [ex.prompt for ex in _examples(3, seed=2)]
    outs = beam_search(model, prompts, BeamConfig(num_beams=1, max_new_tokens=6), pad_id=0, eos_id=2,
                       source_starts=[2] * 3)
    for p, hyp in zip(prompts, outs):
        seq = list(p)
        for tok in hyp[0].tokens:
            with torch.no_grad():
                h = model(torch.tensor([seq]))[0]
                src = torch.zeros(len(seq), dtype=torch.bool)
                src[2:len(p) - 1] = True
                lp = model.copy_head.log_mixture(h[-1:], model.lm_head(h[-1:]), model.copy_head.keys(h)[None],
                                                 torch.tensor([seq]), src[None])
            assert int(lp.argmax()) == tok
            seq.append(tok)
    beams = beam_search(model, prompts, BeamConfig(num_beams=3, max_new_tokens=6), pad_id=0, eos_id=2,
                        source_starts=[2] * 3)
    assert len(beams) == 3 and all(b for b in beams)


def test_seq2seq_run_with_a_copy_head_trains_saves_loads_decodes_and_refuses_export(tmp_path, tiny_lm_dir):
    """``copy_dim`` in a recipe: the run adds the head to the pretrained decoder, trains, saves a folder that
    loads with the head and decodes the test set; export refuses the folder with a reason."""
    from conftest import write_translation_pairs
    from test_seq2seq_run import QUIET, _cfg

    from scratchlm.export import export
    from scratchlm.export.common import ExportError
    from scratchlm.infer.seq2seq import load_seq2seq
    from scratchlm.stages.seq2seq import run

    pairs = write_translation_pairs(tmp_path / "pairs.jsonl", 120)
    report = run(_cfg(tmp_path, tiny_lm_dir, pairs, name="copy", copy_dim=8, **{"train.max_steps": 4}), log=QUIET)
    assert "copy head (8)" in report["description"] and set(report["test"]) == {"greedy", "beam"}
    loaded = load_seq2seq(tmp_path / "runs/copy/model")
    assert loaded.model.copy_head is not None and loaded.config["model"]["copy_dim"] == 8
    assert len(loaded.generate(["cat dog"], loaded_decode(loaded), num_beams=2)) == 1
    with pytest.raises(ExportError, match="copy head"):
        export(tmp_path / "runs/copy/model", "onnx", tmp_path / "out")


def loaded_decode(loaded):
    from scratchlm.infer.seq2seq import DecodeConfig

    return DecodeConfig(max_new_tokens=6)
