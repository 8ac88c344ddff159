"""Scoring passes: the chunked output-head loss and the compiled bodies give the eager model's numbers, and a
pass with progress reports its throughput."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchlm.model.heads import SequenceClassifier
from scratchlm.model.transformer import ModelConfig, Transformer
from scratchlm.tasks import classify as classify_task
from scratchlm.tasks import lm

CFG = ModelConfig(vocab_size=301, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, init_std=0.1)


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


def test_chunked_head_loss_equals_cross_entropy(model):
    torch.manual_seed(1)
    idx, tgt = torch.randint(0, 301, (3, 32)), torch.randint(0, 301, (3, 32))
    with torch.no_grad():
        hidden = model(idx)
        ref = F.cross_entropy(model.lm_head(hidden).reshape(-1, 301), tgt.reshape(-1), reduction="none")
        got = lm.token_losses(model, hidden, tgt, rows=7)  # a chunk size that leaves a ragged last chunk
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_compiled_lm_pass_scores_like_the_eager_one(model, monkeypatch):
    tokens = np.random.default_rng(0).integers(0, 301, 32 * 40 + 1)
    lengths = torch.ones(301, dtype=torch.long)
    eager = lm.evaluate_tokens(model, tokens, lengths)
    monkeypatch.setattr(lm, "COMPILE_MIN_TOKENS", 0)
    compiled = lm.evaluate_tokens(model, tokens, lengths, progress="score")
    assert compiled["val_bpb"] == pytest.approx(eager["val_bpb"], rel=1e-5)
    assert compiled["tokens_per_s"] > 0 and compiled["forward_gflops_per_s"] > 0


def test_compiled_classifier_pass_matches_the_eager_one(model, monkeypatch):
    torch.manual_seed(2)
    clf = SequenceClassifier(model, 3, pad_id=0).eval()
    rng = np.random.default_rng(1)
    rows = [rng.integers(1, 301, n) for n in rng.integers(3, 33, 50)]
    eager = classify_task.predict_proba(clf, rows, 0, batch_size=8)
    monkeypatch.setattr(classify_task, "COMPILE_MIN_TEXTS", 0)
    stats: dict = {}
    compiled = classify_task.predict_proba(clf, rows, 0, batch_size=8, stats=stats)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    assert stats["tokens"] == sum(len(r) for r in rows) and stats["forward_gflops_per_s"] > 0
