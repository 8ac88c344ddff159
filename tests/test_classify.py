"""Classification end to end on tiny models: the task's batching, fine-tuning (full, LoRA, from scratch), the
baselines through the same runner, prediction, evaluation and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, classify_overrides, requires_data, write_sentiment_csv

from scratchlm.data.labeled import LabelError
from scratchlm.data.sources import DataError
from scratchlm.infer.classify import load_classifier
from scratchlm.stages.classify import build_config, evaluate_model, run
from scratchlm.tasks.classify import ClassifyTask, collate, encode_texts, truncate_head_tail

QUIET = lambda *a, **k: None  # noqa: E731


def test_truncate_head_tail():
    ids = list(range(100))
    assert truncate_head_tail(ids, 200) == ids
    out = truncate_head_tail(ids, 10, head_fraction=0.3)
    assert out == [0, 1, 2] + list(range(93, 100))
    assert truncate_head_tail(ids, 10, head_fraction=0.0) == list(range(90, 100))
    assert truncate_head_tail(ids, 10, head_fraction=1.0) == list(range(10))


def test_encode_texts_wraps_and_cuts(prepared):
    tok = prepared.tokenizer
    long = "To be, or not to be, that is the question. " * 40
    rows, cut = encode_texts(tok, ["short text", long], max_length=32, head_fraction=0.25)
    assert cut == 1 and len(rows[1]) == 32
    assert rows[0][0] == tok.eos_id and rows[0][-1] == tok.eos_id and rows[1][-1] == tok.eos_id
    full = tok.encode(long)
    assert list(rows[1][1:9]) == full[:8] and list(rows[1][9:-1]) == full[-22:]


def _task(n=50, seed=3):
    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 50, size=int(rng.integers(3, 40))) for _ in range(n)]
    labels = rng.integers(0, 2, size=n)
    return ClassifyTask(torch.nn.Identity(), rows, labels, rows[:5], labels[:5], num_labels=2, pad_id=0, seed=seed,
                        pad_multiple=1)


def test_batches_do_not_depend_on_accumulation_or_processes():
    a, b = _task(), _task()
    for step in (0, 1, 5, 7):  # step 7 is in the second epoch (6 steps of 8 rows per epoch)
        one = a.micro_batches(step, 1, 8, 0, 1)
        two = b.micro_batches(step, 2, 4, 0, 1)
        labels = torch.cat([m["labels"] for m in two])
        assert torch.equal(one[0]["labels"], labels)
        ranks = [b.micro_batches(step, 1, 4, r, 2)[0] for r in (0, 1)]
        assert torch.equal(torch.cat([m["labels"] for m in ranks]), labels)
    # an epoch visits every row once (up to the remainder that does not fill a batch)
    seen = np.concatenate([a._epoch_order(0, 8)])
    assert len(set(seen.tolist())) == len(seen) == 48


class _FirstTokenOracle(torch.nn.Module):
    """Predicts the label that the row's first token encodes (token 1 -> class 0, token 2 -> class 1)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, mask):
        return torch.nn.functional.one_hot(idx[:, 0] - 1, 2).float() * 10 + self.w


def test_a_capped_evaluation_scores_a_seeded_sample_not_the_first_rows():
    # the validation rows sorted by label, as IMDb's file is: the first 20 rows are all negative
    labels = np.array([0] * 50 + [1] * 50)
    rows = [np.array([1 + y, 5, 6]) for y in labels]
    task = ClassifyTask(_FirstTokenOracle(), rows, labels, rows, labels, num_labels=2, pad_id=0,
                        eval_batch_size=10)
    capped = task.evaluate(task.model, max_batches=2)
    # a perfect model scores macro F1 1.0 only when both classes are in the sample (the first 20 rows give 0.5)
    assert capped["val_accuracy"] == 1.0 and capped["val_f1"] == 1.0
    assert task.evaluate(task.model, max_batches=2) == capped  # the same sample at every evaluation
    assert task.evaluate(task.model, max_batches=0)["val_f1"] == 1.0


def test_length_grouping_cuts_padding():
    task = _task(n=2000)
    padded = real = 0
    for step in range(40):
        for mb in task.micro_batches(step, 4, 8, 0, 1):
            padded += mb["idx"].numel()
            real += int(mb["attention_mask"].sum())
    assert real / padded > 0.9  # random batches of lengths 3..39 would be ~55% real
    idx, mask = collate([np.array([1, 2, 3]), np.array([4])], pad_id=0, pad_multiple=4)
    assert idx.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]] and mask.sum().item() == 4


def _config(tmp_path, init, csv, **over):
    overrides = classify_overrides(tmp_path / "runs", init, csv)
    return build_config(None, [*overrides, *[f"{k}={v}" for k, v in over.items()]])


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return write_sentiment_csv(tmp_path_factory.mktemp("clf") / "sentiment.csv", n=240)


def test_full_finetune_learns_and_reloads(tmp_path, tiny_lm_dir, csv):
    report = run(_config(tmp_path, tiny_lm_dir, csv, name="full"), log=QUIET)
    assert report["test"]["accuracy"] >= 0.9, report["test"]
    out = tmp_path / "runs" / "full"
    for f in ("report.json", "metrics.jsonl", "confusion_test.png", "model/model.safetensors", "model/config.json"):
        assert (out / f).exists(), f
    clf = load_classifier(out / "model")
    assert clf.label_names == ["neg", "pos"]
    probs = clf.predict_proba(["the film was good and great", "the plot was awful and boring"])
    assert probs.argmax(1).tolist() == [1, 0]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert {"val_f1", "val_accuracy", "val_loss"} <= set(evals[-1])
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["recipe"]["data"]["dataset"] == str(csv) and saved["label_names"] == ["neg", "pos"]


def test_lora_saves_peft_adapter_and_merges(tmp_path, tiny_lm_dir, csv):
    cfg = _config(tmp_path, tiny_lm_dir, csv, name="lora", method="lora", **{"lora.r": 4, "train.lr": 2e-2})
    report = run(cfg, log=QUIET)
    out = tmp_path / "runs" / "lora"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4 and adapter["task_type"] == "SEQ_CLS"
    assert report["trainable_parameters"] < report["parameters"] / 3
    clf = load_classifier(out / "model")  # merged: a plain classifier, no LoRA modules left
    assert not any("lora_" in k for k in clf.model.state_dict())
    assert report["test"]["accuracy"] > 0.6  # LoRA on a random tiny backbone learns slowly; it does learn
    # the merged model scores the validation set exactly as the adapter model did at the best step
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    best = max(evals, key=lambda r: r["val_f1"])
    assert report["val"]["accuracy"] == pytest.approx(best["val_accuracy"])


def test_from_scratch_starts_from_other_weights(tmp_path, tiny_lm_dir, csv):
    cfg = _config(tmp_path, tiny_lm_dir, csv, name="scratch", init_weights="random", **{"train.max_steps": 1})
    run(cfg, log=QUIET)
    clf = load_classifier(tmp_path / "runs" / "scratch" / "model")
    from scratchlm.model.folder import load_model

    pre = load_model(tiny_lm_dir).model.state_dict()["layers.0.attn.q_proj.weight"]
    now = clf.model.state_dict()["backbone.layers.0.attn.q_proj.weight"]
    assert not torch.allclose(pre, now, atol=1e-2)


@pytest.mark.parametrize("kind", ["gru", "bow", "tfidf"])
def test_baselines_share_the_runner(tmp_path, tiny_lm_dir, csv, kind):
    report = run(_config(tmp_path, tiny_lm_dir, csv, name=kind, kind=kind, **{"train.lr": 1e-2}), log=QUIET)
    assert report["kind"] == kind and report["test"]["accuracy"] >= 0.8 and report["parameters"] > 0
    clf = load_classifier(tmp_path / "runs" / kind / "model")
    assert clf.predict_proba(["good great film"]).shape == (1, 2)


def test_evaluate_checks_the_label_set(tmp_path, tiny_lm_dir, csv):
    run(_config(tmp_path, tiny_lm_dir, csv, name="bow", kind="bow"), log=QUIET)
    model = tmp_path / "runs" / "bow" / "model"
    m = evaluate_model(model, str(csv), "train", out_dir=tmp_path / "eval", progress=False)
    assert m["n"] == 240 and (tmp_path / "eval" / "confusion_sentiment_train.png").exists()
    other = tmp_path / "other.csv"
    other.write_text("text,label\nsome text,neg\nmore text,neutral\n")
    with pytest.raises(LabelError, match="row 1.*'neutral'.*label set"):
        evaluate_model(model, str(other), "train", progress=False)


def test_classify_and_evaluate_cli(tmp_path, tiny_lm_dir, csv, cli_env):
    run(_config(tmp_path, tiny_lm_dir, csv, name="bow", kind="bow"), log=QUIET)
    model = str(tmp_path / "runs" / "bow" / "model")
    cli = [sys.executable, "-m", "scratchlm.cli"]
    p = subprocess.run(cli + ["classify", "--model", model, "--json", "a good and great film"], env=cli_env,
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["label"] == "pos" and 0.5 < row["probability"] <= 1
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "awful boring plot"}\n{"text": "superb lovely story"}\n')
    p = subprocess.run(cli + ["classify", "--model", model, "--input", str(inp), "--output", str(tmp_path / "o.csv")],
                       env=cli_env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    import pandas as pd

    out = pd.read_csv(tmp_path / "o.csv")
    assert out["prediction"].tolist() == ["neg", "pos"] and {"p_neg", "p_pos", "probability"} <= set(out.columns)
    assert out["text"].tolist() == ["awful boring plot", "superb lovely story"]  # the input's columns are kept
    txt = tmp_path / "in.txt"
    txt.write_text("awful boring plot\n\nsuperb lovely story\n")
    p = subprocess.run(cli + ["classify", "--model", model, "--input", str(txt)], env=cli_env, capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in (tmp_path / "in.predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == ["neg", "pos"]  # one text per non-empty line
    p = subprocess.run(cli + ["evaluate", "--model", model, "--data", f"{csv}:train", "--json"], env=cli_env,
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert m["n"] == 240 and len(m["confusion_matrix"]) == 2 and "roc_auc" in m
    p = subprocess.run(cli + ["classify", "--model", model, "   "], env=cli_env, capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 2 and "empty" in p.stderr
    p = subprocess.run(cli + ["report", str(tmp_path / "runs")], env=cli_env, capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "runs" / "report.md").exists() and (tmp_path / "runs" / "report.html").exists()


def test_label_set_of_a_resumed_or_evaluated_model_must_match(tmp_path, tiny_lm_dir, csv):
    """A text longer than the context is cut, never an error; the saved model records its context."""
    run(_config(tmp_path, tiny_lm_dir, csv, name="full", **{"train.max_steps": 2}), log=QUIET)
    clf = load_classifier(tmp_path / "runs" / "full" / "model")
    assert clf.config["max_length"] == 32
    probs = clf.predict_proba(["good " * 500])
    assert probs.shape == (1, 2) and np.isfinite(probs).all()


def test_classical_baseline_may_train_without_validation(tmp_path, tiny_lm_dir, csv):
    report = run(_config(tmp_path, tiny_lm_dir, csv, name="bow-all", kind="bow", **{"data.val_fraction": 0}),
                 log=QUIET)
    assert "val" not in report and report["train_examples"] == 192  # 240 minus the 20% test carve-out
    from scratchlm.config import ConfigError

    with pytest.raises(ConfigError, match="validation set"):
        run(_config(tmp_path, tiny_lm_dir, csv, name="gru0", kind="gru", **{"data.val_fraction": 0}), log=QUIET)


def test_resume_refuses_a_different_label_set(tmp_path, tiny_lm_dir, csv):
    from scratchlm.model.checkpoint import CheckpointError

    run(_config(tmp_path, tiny_lm_dir, csv, name="r", **{"train.max_steps": 2}), log=QUIET)
    other = tmp_path / "other.csv"
    other.write_text(csv.read_text().replace(",pos\n", ",positive\n").replace(",neg\n", ",negative\n"))
    cfg = _config(tmp_path, tiny_lm_dir, other, name="r", **{"train.max_steps": 4, "train.resume": "true"})
    with pytest.raises(CheckpointError, match="label_names"):
        run(cfg, log=QUIET)


def test_recipe_sections_per_kind_and_override_precedence():
    from scratchlm.config import find_recipe as _recipe

    imdb = _recipe("imdb")
    dec = build_config(imdb, [])
    assert (dec.kind, dec.method, dec.pooling, dec.train.best_metric, dec.train.best_mode) == \
        ("decoder", "full", "mean", "val_f1", "max")
    lora = build_config(imdb, [], defaults={"method": "lora"})
    assert lora.train.lr == 1e-3 and lora.lora.task_type == "SEQ_CLS"
    gru = build_config(imdb, [], defaults={"kind": "gru"})
    assert gru.rnn.cell == "gru" and gru.train.lr == 2e-3 and gru.max_length == 400
    assert build_config(imdb, ["train.lr=5e-3"], defaults={"kind": "gru"}).train.lr == 5e-3  # CLI wins
    assert build_config(imdb, [], defaults={"kind": "bow"}).classical.kind == "bow"
    from scratchlm.config import ConfigError

    with pytest.raises(ConfigError, match="poolin"):
        build_config(imdb, ["poolin=mean"])


@requires_data
def test_evaluate_scores_the_recipes_carved_split_of_a_one_file_dataset(prepared, tmp_path):
    """SMS spam is one file and its recipe carves the test set with a seed: `evaluate --data sms_spam:test` scores
    exactly those rows (it used to fail with "no split 'test'", so the published card could not be re-scored)."""
    from serve_utils import save_classifier

    from scratchlm.config import from_dict
    from scratchlm.data.labeled import LabeledDataConfig, load_labeled

    recipe = {"dataset": "sms_spam", "test_split": None, "test_fraction": 0.1, "val_fraction": 0.1}
    folder = save_classifier(tmp_path / "m", prepared.tokenizer, labels=("ham", "spam"),
                             label_values=[0, 1], recipe={"data": recipe})
    data = load_labeled(from_dict(LabeledDataConfig, recipe), log=lambda *a: None)
    for split, part in (("test", data.test), ("validation", data.val)):
        m = evaluate_model(folder, "sms_spam", split, progress=False)
        assert m["n"] == len(part) and len(part) > 500
        assert np.asarray(m["confusion_matrix"]).sum(axis=1).tolist() == part.counts(2)
    with pytest.raises(DataError, match="split"):  # a split neither the dataset has nor the recipe carved
        evaluate_model(folder, "sms_spam", "dev", progress=False)
