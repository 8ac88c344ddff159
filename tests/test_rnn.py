"""Recurrent baselines: shapes, padding never leaks into a row's logits, gradients, and a tiny task learnt."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import alone, right_pad

from scratchlm.baselines.rnn import CELLS, POOLINGS, RNNClassifier, RNNConfig

VOCAB, PAD = 50, 0
LENGTHS = [5, 12, 1, 9]


def model(cell: str = "lstm", pooling: str = "max", seed: int = 0, **kw) -> RNNClassifier:
    torch.manual_seed(seed)
    cfg = RNNConfig(**{"cell": cell, "vocab_size": VOCAB, "n_embd": 16, "hidden_size": 12, "pooling": pooling,
                       "pad_id": PAD, **kw})
    return RNNClassifier(cfg, 3, label_names=["a", "b", "c"]).eval()


def rows(seed: int = 1, lengths=LENGTHS) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=g) for n in lengths]


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_for_every_cell(cell):
    for bidirectional in (True, False):
        m = model(cell, bidirectional=bidirectional, num_layers=2)
        idx, mask = right_pad(rows())
        with torch.no_grad():
            logits = m(idx, mask)
            feats = m.features(idx, mask)
        assert logits.shape == (len(LENGTHS), 3)
        assert feats.shape == (len(LENGTHS), m.cfg.out_dim) == (len(LENGTHS), 12 * (2 if bidirectional else 1))
        assert torch.isfinite(logits).all()
        assert m.num_params() == sum(p.numel() for p in m.parameters()) > 0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_does_not_change_a_rows_logits(cell, pooling):
    m = model(cell, pooling, num_layers=2, dropout=0.3)  # eval mode: dropout off
    seqs = rows()
    expected = alone(m, seqs)
    idx, mask = right_pad(seqs, T=16)
    with torch.no_grad():
        by_mask = m(idx, mask)
        by_pad_id = m(idx)  # no mask: padding read from pad_id
        garbage = m(right_pad(seqs, T=16, fill=7)[0], mask)  # what pad positions hold does not matter
        left = torch.zeros_like(idx)
        left_mask = torch.zeros_like(mask)
        for i, s in enumerate(seqs):  # left padding
            left[i, 16 - len(s):] = s
            left_mask[i, 16 - len(s):] = 1
        by_left = m(left, left_mask)
    for got in (by_mask, by_pad_id, garbage, by_left):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_pack_handles_every_length_from_1_to_T():
    T = 7
    m = model("gru", "mean")
    seqs = rows(seed=3, lengths=list(range(1, T + 1))[::-1])
    idx, mask = right_pad(seqs)
    with torch.no_grad():
        batched = m(idx, mask)
    torch.testing.assert_close(batched, alone(m, seqs), atol=1e-5, rtol=0)


def test_last_pooling_is_the_final_state_of_each_direction():
    m = model("gru", "last")
    s = rows()[1]
    with torch.no_grad():
        out, _ = m.rnn(m.embed(s[None]))
        feats = m.features(s[None])
    H = m.cfg.hidden_size
    torch.testing.assert_close(feats[0, :H], out[0, -1, :H])  # forward: after the last token
    torch.testing.assert_close(feats[0, H:], out[0, 0, H:])  # backward: after the first


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_flow_to_every_parameter(cell):
    m = model(cell, "max", num_layers=2).train()
    idx, mask = right_pad(rows())
    loss = F.cross_entropy(m(idx, mask), torch.tensor([0, 1, 2, 1]))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert m.embed.weight.grad[PAD].abs().sum() == 0  # padding_idx row never learns


def test_rows_without_real_tokens_are_rejected():
    m = model()
    idx, mask = right_pad(rows())
    mask[2] = 0
    with pytest.raises(ValueError, match="row.* 2 .*no real tokens"):
        m(idx, mask)
    with pytest.raises(ValueError, match="no real tokens.*pad id 0"):
        m(torch.tensor([[3, 4], [0, 0]]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        m(idx, mask[:, :3])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(idx[0])


def test_config_validation_names_the_field():
    for kw, field in [({"cell": "transformer"}, "rnn.cell"), ({"pooling": "attn"}, "rnn.pooling"),
                      ({"hidden_size": 0}, "rnn.hidden_size"), ({"num_layers": 0}, "rnn.num_layers"),
                      ({"dropout": 1.0}, "rnn.dropout"), ({"pad_id": 8192}, "rnn.pad_id"),
                      ({"vocab_size": -1}, "rnn.vocab_size"), ({"n_embd": 2.5}, "rnn.n_embd")]:
        with pytest.raises(ValueError, match=field):
            RNNConfig(**kw).validate()
    with pytest.raises(ValueError, match="label_names"):
        RNNClassifier(RNNConfig(vocab_size=10), 2, label_names=["x"])
    with pytest.raises(ValueError, match="num_labels"):
        RNNClassifier(RNNConfig(vocab_size=10), 0)


def test_config_dict_rebuilds_the_model():
    m = model("gru", "last", num_layers=2, bidirectional=False)
    d = m.config_dict()
    assert d["rnn"]["cell"] == "gru" and d["num_labels"] == 3 and d["label_names"] == ["a", "b", "c"]
    clone = RNNClassifier.from_config_dict(d).eval()
    clone.load_state_dict(m.state_dict())
    idx, mask = right_pad(rows())
    with torch.no_grad():
        torch.testing.assert_close(clone(idx, mask), m(idx, mask))
    with pytest.raises(ValueError, match="unknown RNNConfig field"):
        RNNConfig.from_dict({**d["rnn"], "n_head": 4})


@pytest.mark.parametrize("cell,pooling", [("lstm", "max"), ("gru", "last"), ("rnn", "mean")])
def test_learns_whether_a_token_appears(cell, pooling):
    """label = 1 iff token 5 occurs somewhere in the row (variable lengths, right-padded)."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n, T, vocab = 128, 12, 20
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    idx = torch.randint(6, vocab, (n, T), generator=g)  # ids 1..5 unused except the planted 5
    labels = torch.arange(n) % 2
    for i in range(n):
        if labels[i]:
            idx[i, torch.randint(0, int(lengths[i]), (1,), generator=g)] = 5
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    idx = idx * mask  # pad id 0 beyond each length

    torch.manual_seed(0)
    m = RNNClassifier(RNNConfig(cell=cell, vocab_size=vocab, n_embd=16, hidden_size=16, dropout=0.0,
                                pooling=pooling), 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for step in range(200):
        batch = torch.randint(0, n, (32,), generator=g)
        loss = F.cross_entropy(m(idx[batch], mask[batch]), labels[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19:
            with torch.no_grad():
                acc = (m.eval()(idx, mask).argmax(-1) == labels).float().mean().item()
            m.train()
            if acc > 0.99:
                break
    m.eval()
    with torch.no_grad():
        acc = (m(idx, mask).argmax(-1) == labels).float().mean().item()
    assert acc > 0.95, f"train accuracy {acc:.3f} after {step + 1} steps"
