"""Decoder-only seq2seq: loss only on target tokens, packing without attention across examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from scratchlm.model.transformer import Transformer
from scratchlm.tasks.seq2seq import (
    Example,
    Seq2SeqTask,
    encode_pairs,
    example_arrays,
    pack,
    packed_batch,
    prompt_prefix,
)


def _examples(n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = [1, 7, *rng.integers(20, 60, size=int(rng.integers(2, 9))).tolist(), 3]
        t = [*rng.integers(20, 60, size=int(rng.integers(1, 7))).tolist(), 2]
        out.append(Example(p, t))
    return out


def test_no_loss_on_source_tokens():
    ex = Example([1, 7, 40, 41, 42, 3], [50, 51, 2])
    x, y = example_arrays(ex)
    assert x.tolist() == [1, 7, 40, 41, 42, 3, 50, 51]
    assert y.tolist() == [-100, -100, -100, -100, -100, 50, 51, 2]  # the first target is predicted at <|sep|>


def test_packing_first_fit_and_budget():
    lengths = np.array([5, 9, 3, 7, 2, 6])
    rows = pack(lengths, np.arange(6), block_size=10)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == 4  # 32 tokens in rows of 10: first fit needs 4


def _first_fit_reference(lengths, order, block_size):
    rows, room = [], []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(int(i))
                room[r] -= lengths[i]
                break
        else:
            rows.append([int(i)])
            room.append(block_size - lengths[i])
    return rows


@pytest.mark.parametrize("block_size", [16, 40, 128])
def test_packing_closes_full_rows_without_changing_first_fit(block_size):
    """Closing rows that no example can fill any more is a speed-up only: the rows are first fit's."""
    rng = np.random.default_rng(block_size)
    lengths = rng.integers(3, 30, size=500)
    order = rng.permutation(500)
    assert pack(lengths, order, block_size) == _first_fit_reference(lengths, order, block_size)


def test_example_longer_than_a_row_gets_its_own_row():
    rows = pack(np.array([4, 12, 3]), np.arange(3), block_size=8)
    assert [1] in rows and sorted(i for r in rows for i in r) == [0, 1, 2]


def test_pack_length_sets_the_row_length():
    model = Transformer(tiny_model_config(64, block_size=48))
    exs = _examples(40)
    task = Seq2SeqTask(model, exs, exs[:4], block_size=48, pad_id=0, seed=5, pack_length=16)
    lengths = [len(e) - 1 for e in exs]
    rows = task.epoch_rows(0)
    assert all(sum(lengths[i] for i in r) <= 16 or len(r) == 1 for r in rows)
    assert sorted(i for r in rows for i in r) == list(range(40))
    batch = task.micro_batches(0, 1, 4, 0, 1)[0]
    assert batch["idx"].shape[1] <= max(16, max(lengths))


def test_packed_examples_compute_what_they_compute_alone():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(64, block_size=48)).eval()
    exs = _examples(6)
    rows = pack(np.array([len(e) - 1 for e in exs]), np.arange(6), block_size=48)
    assert any(len(r) > 1 for r in rows)
    batch = packed_batch(exs, rows, 48, pad_id=0)
    with torch.no_grad():
        logits = model.logits(batch["idx"], position_ids=batch["position_ids"], mask=batch["mask"])
        for b, row in enumerate(rows):
            at = 0
            for i in row:
                x, _ = example_arrays(exs[i])
                alone = model.logits(torch.from_numpy(x)[None])[0]
                torch.testing.assert_close(logits[b, at:at + len(x)], alone, atol=1e-5, rtol=1e-4)
                at += len(x)
    # summed loss over packed rows equals the sum over examples alone
    with torch.no_grad():
        packed = model.loss(batch["idx"], batch["targets"], reduction="sum", position_ids=batch["position_ids"],
                            mask=batch["mask"])
        alone = sum(model.loss(torch.from_numpy(example_arrays(e)[0])[None],
                               torch.from_numpy(example_arrays(e)[1])[None], reduction="sum") for e in exs)
    assert float(packed) == pytest.approx(float(alone), rel=1e-5)


def test_head_only_at_targets_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(64, block_size=48))
    exs = _examples(6)
    rows = pack(np.array([len(e) - 1 for e in exs]), np.arange(6), block_size=48)
    batch = packed_batch(exs, rows, 48, pad_id=0)
    kw = {"position_ids": batch["position_ids"], "mask": batch["mask"]}
    assert (batch["targets"] == -100).float().mean() > 0.3  # sources and padding: most positions skip the head
    losses, grads = [], []
    for only in (False, True):
        model.zero_grad()
        loss = model.loss(batch["idx"], batch["targets"], reduction="sum", only_targets=only, **kw)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_task_batches_are_deterministic_and_split_invariant():
    model = Transformer(tiny_model_config(64, block_size=48))
    exs = _examples(40)
    a = Seq2SeqTask(model, exs, exs[:4], block_size=48, pad_id=0, seed=5)
    b = Seq2SeqTask(model, exs, exs[:4], block_size=48, pad_id=0, seed=5)
    one = a.micro_batches(3, 1, 4, 0, 1)[0]
    two = b.micro_batches(3, 2, 2, 0, 1)
    assert int((one["targets"] != -100).sum()) == sum(int((m["targets"] != -100).sum()) for m in two)
    per_epoch = a.rows_per_epoch()
    seen = [i for s in range(per_epoch) for i in a.epoch_rows(0)[s]]
    assert sorted(seen) == list(range(40))  # an epoch is every example once
    metrics = a.evaluate(model.eval(), 0)
    assert metrics["val_loss"] > 0


def test_epochs_with_different_row_counts_are_all_read():
    """Regression: packing each epoch's shuffle gives a different number of rows; stepping past the first
    epoch indexed it with the first epoch's count (IndexError, or rows skipped)."""
    model = Transformer(tiny_model_config(64, block_size=48))
    lengths = np.random.default_rng(3).integers(3, 30, size=300)
    exs = [Example([1, 7] + [20] * (int(n) - 3), [21, 2]) for n in lengths]
    task = Seq2SeqTask(model, exs, exs[:4], block_size=48, pad_id=0, seed=5, pack_length=40)
    sizes = [task.epoch_size(e) for e in range(6)]
    assert len(set(sizes)) > 1  # the case that broke
    gb = 4
    rows = []
    for step in range(sum(sizes[:5]) // gb):
        for j in range(step * gb, (step + 1) * gb):
            e, pos = task.locate(j)
            rows.append((e, task.epoch_rows(e)[pos]))
        task.micro_batches(step, 1, gb, 0, 1)  # builds every batch without an IndexError
    for e in range(4):  # every complete epoch yields each example exactly once
        seen = sorted(i for ep, r in rows if ep == e for i in r)
        assert seen == list(range(300))


def test_encode_pairs_truncates_and_reports(prepared):
    tok = prepared.tokenizer
    prefix = prompt_prefix(tok, "translate", "en", "zh")
    assert prefix[0] == tok.bos_id and len(prefix) == 4
    exs, rep = encode_pairs(tok, ["Hello there. " * 50, "", "Hi"], ["Bonjour " * 50, "x", "Salut"], prefix,
                            block_size=64, max_target_tokens=16)
    assert rep.examples == 2 and rep.dropped_empty == 1 and rep.source_truncated == 1 and rep.target_truncated == 1
    assert all(len(e) <= 65 for e in exs) and exs[0].prompt[-1] == tok.sep_id and exs[0].target[-1] == tok.eos_id
    with pytest.raises(ValueError, match="fr"):
        prompt_prefix(tok, "translate", "fr", "de")


def test_max_source_tokens_cuts_every_source_to_its_head(prepared):
    """``max_source_tokens`` cuts sources that fit the context too, keeping their beginning, and counts them."""
    tok = prepared.tokenizer
    prefix = [tok.bos_id]
    sources = ["one two three four five six seven eight nine ten eleven twelve", "Hi"]
    full, _ = encode_pairs(tok, sources, ["a", "b"], prefix, block_size=64, max_target_tokens=8)
    cut, rep = encode_pairs(tok, sources, ["a", "b"], prefix, block_size=64, max_target_tokens=8,
                            max_source_tokens=4)
    assert len(full[0].prompt) > 6 and rep.source_truncated == 1
    assert cut[0].prompt == full[0].prompt[:5] + [tok.sep_id]  # bos + the first 4 source tokens + sep
    assert cut[1].prompt == full[1].prompt and cut[0].target == full[0].target


def test_prefix_space_gives_a_targets_first_word_its_tokens_in_the_source(prepared):
    """Byte-level BPE encodes a text's first word without the leading space it has inside a text; with
    ``prefix_space`` a subject's first word has the tokens it has in the e-mail, so a copy head can copy it.
    Blank sides stay blank (and are dropped); the copyable source span starts after the prefix."""
    tok = prepared.tokenizer
    prefix = [tok.bos_id]
    src, tgt = ["Please send the king his letters"], ["king letters"]
    plain, _ = encode_pairs(tok, src, tgt, prefix, block_size=64, max_target_tokens=8)
    spaced, rep = encode_pairs(tok, src + ["  "], tgt + ["x"], prefix, block_size=64, max_target_tokens=8,
                               prefix_space=True)
    king = tok.encode(" king")
    assert plain[0].target[:len(king)] != king and spaced[0].target[:len(king)] == king
    body = spaced[0].prompt[spaced[0].source_start:-1]
    assert any(body[i:i + len(king)] == king for i in range(len(body)))
    assert rep.dropped_empty == 1 and spaced[0].source_start == 1
