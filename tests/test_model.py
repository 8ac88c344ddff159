"""The decoder: parameter count, causality, GQA, KV-cache chunked prefill, FLOPs, weight tying."""

from __future__ import annotations

import pytest
import torch

from scratchlm.model import checkpoint as ckpt
from scratchlm.model.transformer import Block, KVCache, ModelConfig, Transformer

SMALL = dict(vocab_size=101, block_size=48, n_layer=2, n_head=4, n_embd=32, init_std=0.1)


def model_of(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**{**SMALL, **kw})).eval()


def test_block_parameter_count_matches_12_d_squared():
    d = 384
    cfg = ModelConfig(n_embd=d, n_head=6, n_layer=1, vocab_size=256)
    assert cfg.mlp_hidden == 8 * d // 3 == 1024  # Llama's rule keeps the MLP at GPT-2's 8d^2
    n = sum(p.numel() for p in Block(cfg, 0).parameters())
    assert abs(n - 12 * d * d) / (12 * d * d) < 0.05, n
    # the whole model: blocks + one (tied) embedding + final norm
    model = Transformer(cfg)
    assert model.num_params() == n + 256 * d + d
    assert model.num_params(non_embedding=True) == n + d


def test_changing_a_future_token_never_changes_earlier_logits():
    model = model_of()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 40), generator=g)
    with torch.no_grad():
        base = model.logits(idx)
        for t in (1, 17, 39):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1 + torch.arange(2)) % SMALL["vocab_size"]
            out = model.logits(changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
            assert not torch.allclose(out[:, t], base[:, t])  # the changed position itself does move


def test_grouped_query_attention_equals_multi_head_with_shared_kv():
    gqa = model_of(n_kv_head=2)
    attn = gqa.layers[0].attn
    hd = SMALL["n_embd"] // SMALL["n_head"]
    assert attn.k_proj.weight.shape == (2 * hd, SMALL["n_embd"])  # fewer key/value heads
    mha = model_of(n_kv_head=4)
    state = gqa.state_dict()
    rep = SMALL["n_head"] // 2
    for k, v in list(state.items()):
        if k.endswith(("k_proj.weight", "v_proj.weight")):  # kv head j serves query heads j*rep..
            state[k] = v.view(2, hd, -1).repeat_interleave(rep, dim=0).reshape(SMALL["n_head"] * hd, -1)
    mha.load_state_dict(state)
    idx = torch.randint(0, SMALL["vocab_size"], (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(gqa.logits(idx), mha.logits(idx), rtol=1e-5, atol=1e-5)
    # and it trains: gradients reach the shared key/value projections
    gqa.train()
    loss = gqa.loss(idx[:, :-1], idx[:, 1:])
    loss.backward()
    assert torch.isfinite(loss) and attn.k_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n_kv_head", [4, 2])
@pytest.mark.parametrize("split", [1, 13, 29])
def test_kv_cache_chunked_forward_equals_full_forward(n_kv_head, split):
    model = model_of(n_kv_head=n_kv_head)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.logits(idx)
        cache = KVCache(model.cfg, batch_size=2, max_len=SMALL["block_size"], device="cpu", dtype=torch.float32)
        first = model.logits(idx[:, :split], cache=cache)
        cache.pos += split
        second = model.logits(idx[:, split:], cache=cache)
        cache.pos += 30 - split
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=1e-5, atol=1e-5)


def test_context_length_is_enforced():
    model = model_of()
    with pytest.raises(ValueError, match="context length"):
        model.logits(torch.zeros(1, SMALL["block_size"] + 1, dtype=torch.long))


def test_flops_per_token():
    model = model_of()
    f = model.flops_per_token()
    cfg = model.cfg
    assert f > 0
    matmul_params = model.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd
    assert f == pytest.approx(6 * matmul_params + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size)
    assert model.flops_per_token(seq_len=8) < f  # attention cost grows with the context


def test_weight_tying_and_tied_checkpoint_roundtrip():
    model = model_of()
    assert model.lm_head.weight is model.embed.weight
    assert model.num_params() == sum(p.numel() for p in model.parameters())  # counted once
    saved = ckpt.model_state(model)
    assert "embed.weight" in saved and "lm_head.weight" not in saved  # stored once
    other = model_of()
    with torch.no_grad():
        other.embed.weight.zero_()
    ckpt.load_model_weights(other, saved)
    assert other.lm_head.weight is other.embed.weight  # still tied after loading
    assert torch.equal(other.lm_head.weight, model.embed.weight)

    untied = model_of(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.embed.weight
    assert "lm_head.weight" in ckpt.model_state(untied)


def test_loss_ignores_masked_targets():
    model = model_of()
    idx = torch.randint(0, SMALL["vocab_size"], (1, 10), generator=torch.Generator().manual_seed(4))
    targets = idx.roll(-1, dims=1)
    masked = targets.clone()
    masked[:, :5] = -100
    with torch.no_grad():
        per_token = torch.nn.functional.cross_entropy(model.logits(idx)[0], targets[0], reduction="none")
        assert model.loss(idx, masked, reduction="sum").item() == pytest.approx(per_token[5:].sum().item(),
                                                                                 rel=1e-5)


def test_set_dropout_changes_every_dropout_and_the_config():
    torch.manual_seed(0)
    model = model_of()
    model.set_dropout(0.3)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.3 for p in ps) and model.cfg.dropout == 0.3
    x = torch.randint(0, model.cfg.vocab_size, (2, 8))
    model.train()
    assert not torch.equal(model.logits(x), model.logits(x))  # active in training
    model.eval()
    torch.testing.assert_close(model.logits(x), model.logits(x))
