"""Sequence classifier: pooling picks the right positions, padding never leaks into a row's logits."""

from __future__ import annotations

import pytest
import torch
from conftest import alone, right_pad

from scratchlm.model.heads import ClassificationLoss, SequenceClassifier, padded_attention_mask
from scratchlm.model.transformer import ModelConfig, Transformer

VOCAB, PAD = 97, 0
LENGTHS = [5, 12, 1, 9]


def classifier(pooling: str = "last", seed: int = 0, **kw) -> SequenceClassifier:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32, init_std=0.1)
    return SequenceClassifier(Transformer(cfg), 3, pooling=pooling, **kw).eval()


def rows(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=g) for n in LENGTHS]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padded_batch_equals_each_row_alone(pooling):
    model = classifier(pooling)
    seqs = rows()
    idx, mask = right_pad(seqs)
    with torch.no_grad():
        batched = model(idx, mask)
    assert batched.shape == (len(seqs), 3)
    torch.testing.assert_close(batched, alone(model, seqs), atol=1e-5, rtol=0)


def test_last_pooling_picks_the_last_real_token():
    model = classifier("last")
    seqs = rows()
    idx, mask = right_pad(seqs)
    with torch.no_grad():
        hidden = model.backbone(idx, mask=padded_attention_mask(mask.bool()))
        feats = model.features(idx, mask)
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(feats[i], hidden[i, n - 1], atol=1e-6, rtol=0)


def test_mean_pooling_matches_a_manual_mean():
    model = classifier("mean")
    seqs = rows()
    idx, mask = right_pad(seqs)
    with torch.no_grad():
        logits = model(idx, mask)
        manual = torch.stack([model.backbone(s[None])[0].mean(dim=0) for s in seqs])
        want = manual @ model.head.score.weight.T
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padding_amount_and_content_do_not_change_logits(pooling):
    model = classifier(pooling)
    seqs = rows()
    idx, mask = right_pad(seqs)
    garbage = torch.randint(1, VOCAB, (len(seqs), 20), generator=torch.Generator().manual_seed(5))
    idx2, mask2 = right_pad(seqs, T=20, fill=garbage)  # more padding, and pad positions hold real-looking ids
    with torch.no_grad():
        a, b = model(idx, mask), model(idx2, mask2)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_pad_id_without_mask_and_no_padding_path():
    model = classifier("last", pad_id=PAD)
    seqs = rows()
    idx, mask = right_pad(seqs)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), model(idx, mask), atol=0, rtol=0)
        full = torch.randint(1, VOCAB, (2, 10), generator=torch.Generator().manual_seed(2))
        # all-real rows: the plain causal path, equal to the masked one
        torch.testing.assert_close(model(full), model(full, torch.ones_like(full)), atol=0, rtol=0)
        h = model.backbone(full)
        torch.testing.assert_close(model.features(full), h[:, -1], atol=0, rtol=0)


def test_left_padding_also_works():
    model = classifier("last")
    seqs = rows()
    T = max(LENGTHS)
    idx = torch.full((len(seqs), T), PAD)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, T - len(s):] = s
        mask[i, T - len(s):] = 1
    with torch.no_grad():
        out = model(idx, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, alone(model, seqs), atol=1e-5, rtol=0)


def test_freeze_layers():
    model = classifier()
    assert all(p.requires_grad for p in model.parameters())
    frozen = model.freeze_layers(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("backbone.embed.", "backbone.layers.0.")) for n in trainable)
    assert {n for n in trainable if n.startswith("backbone.layers.")} == {
        n for n, _ in model.named_parameters() if n.startswith("backbone.layers.1.")}
    assert {"backbone.norm.weight", "head.score.weight"} <= trainable
    assert frozen == model.backbone.embed.weight.numel() + sum(p.numel() for p in model.backbone.layers[0].parameters())
    assert model.freeze_layers(0) == 0  # already frozen; never unfreezes
    model.freeze_layers(2)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"backbone.norm.weight",
                                                                          "head.score.weight"}
    with pytest.raises(ValueError):
        model.freeze_layers(3)


def test_frozen_layers_get_no_gradient_and_loss_module():
    model = classifier(dropout=0.1, label_names=["neg", "neu", "pos"])
    assert model.label_names == ["neg", "neu", "pos"] and model.config_dict()["dropout"] == 0.1
    model.freeze_layers(1)
    model.train()
    idx, mask = right_pad(rows())
    labels = torch.tensor([0, 2, -100, 1])
    loss, count = ClassificationLoss(model)({"idx": idx, "attention_mask": mask, "labels": labels})
    assert int(count) == 3 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone.layers[0].attn.q_proj.weight.grad is None
    assert model.backbone.layers[1].attn.q_proj.weight.grad is not None
    assert model.head.score.weight.grad is not None


def test_untied_lm_head_is_frozen_and_bad_inputs():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32, tie_embeddings=False)
    model = SequenceClassifier(cfg, 2)
    assert not model.backbone.lm_head.weight.requires_grad and model.backbone.embed.weight.requires_grad
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(cfg, 2, pooling="max")
    with pytest.raises(ValueError, match="label_names"):
        SequenceClassifier(cfg, 2, label_names=["a"])
    idx = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="no real tokens"):
        model(idx, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="context length"):
        model(torch.ones(1, 33, dtype=torch.long))
