"""Labelled data: splits, label checks, and the leakage guard that keeps the test split unseen."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import requires_data, write_sentiment_csv

from scratchlm.data.labeled import (
    LabeledDataConfig,
    LabelError,
    LeakageError,
    assert_disjoint,
    assert_not_pretrained_on,
    load_labeled,
    stratified_carve,
)
from scratchlm.data.sources import DataError


def _cfg(path, **kw) -> LabeledDataConfig:
    return LabeledDataConfig(dataset=str(path), test_split=None, test_fraction=0.1, val_fraction=0.1, **kw)


def test_stratified_carve_is_seeded_disjoint_and_stratified():
    labels = np.array([0] * 90 + [1] * 10)
    keep, carved = stratified_carve(labels, 0.2, seed=7)
    keep2, carved2 = stratified_carve(labels, 0.2, seed=7)
    assert np.array_equal(carved, carved2) and np.array_equal(keep, keep2)
    assert not set(keep) & set(carved) and len(keep) + len(carved) == 100
    assert np.bincount(labels[carved]).tolist() == [18, 2]
    _, other = stratified_carve(labels, 0.2, seed=8)
    assert not np.array_equal(carved, other)


def test_80_10_10_split_of_one_file(tmp_path):
    path = write_sentiment_csv(tmp_path / "s.csv", n=200)
    data = load_labeled(_cfg(path))
    assert (len(data.train), len(data.val), len(data.test)) == (160, 20, 20)
    assert data.label_names == ["neg", "pos"]
    seen = set(data.train.texts) | set(data.val.texts)
    assert not seen & set(data.test.texts)
    again = load_labeled(_cfg(path))
    assert again.test.texts == data.test.texts and again.val.texts == data.val.texts


def test_test_texts_are_removed_from_train(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    write_sentiment_csv(folder / "train.csv", n=100)
    lines = (folder / "train.csv").read_text().splitlines()
    # the test split repeats two training rows (one with different spacing and case)
    (folder / "test.csv").write_text("\n".join([lines[0], lines[1], "  " + lines[2].upper().replace(",POS", ",pos")
                                                .replace(",NEG", ",neg"), "a brand new review,pos"]) + "\n")
    cfg = LabeledDataConfig(dataset=str(folder), test_split="test", val_fraction=0.1)
    data = load_labeled(cfg)
    assert data.removed_overlap["train"] + data.removed_overlap["validation"] == 2
    assert len(data.train) + len(data.val) == 98
    assert_disjoint(data.train.texts + data.val.texts, data.test.texts)
    with pytest.raises(LeakageError):
        assert_disjoint(["a  b"], ["A b"])


def test_pretraining_on_the_test_split_is_refused():
    config = {"data": {"corpora": [{"source": "imdb", "split": "train"}, {"source": "imdb", "split": "test"}]}}
    with pytest.raises(LeakageError, match="imdb:test"):
        assert_not_pretrained_on(config, "imdb", "test")
    with pytest.raises(LeakageError):
        assert_not_pretrained_on({"data": {"corpora": [{"source": "/data/imdb/test.parquet"}]}}, "imdb", "test")
    assert_not_pretrained_on({"data": {"corpora": [{"source": "imdb", "split": "unsupervised"}]}}, "imdb", "test")
    # ChnSentiCorp reports on `validation`: an LM that read it as its validation text ("auto") is refused too
    with pytest.raises(LeakageError, match="validation text"):
        assert_not_pretrained_on({"data": {"corpora": ["chnsenticorp:train"]}}, "chnsenticorp", "validation")
    with pytest.raises(LeakageError, match="validation text"):  # also down the lineage
        lm = {"data": {"corpora": []}, "backbone": {"data": {"corpora": [{"source": "chnsenticorp"}]}}}
        assert_not_pretrained_on(lm, "chnsenticorp", "validation")
    assert_not_pretrained_on({"data": {"corpora": [{"source": "chnsenticorp", "val_split": None}]}},
                             "chnsenticorp", "validation")
    # the prepare step refuses a test split as pretraining text in the first place
    from scratchlm.config import from_dict
    from scratchlm.data.prepare import CorpusConfig, DataConfig

    with pytest.raises(LeakageError):
        from_dict(DataConfig, {"corpora": ["imdb:train", "imdb:test"]})
    cfg = DataConfig(corpora=[CorpusConfig("imdb", "test")])  # built in code, not from a recipe
    with pytest.raises(LeakageError):
        cfg.validate()


def test_same_split_for_train_and_test_is_refused():
    with pytest.raises(LeakageError):
        LabeledDataConfig(dataset="imdb", train_split="train", test_split="train").validate()


@pytest.mark.parametrize("cell,message", [("", "missing label"), ("maybe", "'maybe' is not one of the label set"),
                                          ("-1", "unlabelled")])
def test_bad_labels_name_the_row(tmp_path, cell, message):
    path = write_sentiment_csv(tmp_path / "s.csv", n=20)
    lines = path.read_text().splitlines()
    if cell == "-1":
        lines = ["text,label"] + [f"{ln.rsplit(',', 1)[0]},{i % 2}" for i, ln in enumerate(lines[1:])]
        lines[6] = lines[6].rsplit(",", 1)[0] + ",-1"
    else:
        lines[6] = lines[6].rsplit(",", 1)[0] + "," + cell
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError) as e:
        load_labeled(_cfg(path, label_names=None if cell == "-1" else ["neg", "pos"]))
    assert message in str(e.value) and "row 5" in str(e.value)


def test_single_class_and_empty_text(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"text {i},pos\n" for i in range(20)))
    with pytest.raises(LabelError, match="at least two classes"):
        load_labeled(_cfg(one))
    empty = write_sentiment_csv(tmp_path / "e.csv", n=20)
    lines = empty.read_text().splitlines()
    lines[4] = '"   ",pos'
    empty.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="row 3.*empty text"):
        load_labeled(_cfg(empty))


def test_broken_csv_quote_names_the_line(tmp_path):
    path = write_sentiment_csv(tmp_path / "q.csv", n=20)
    lines = path.read_text().splitlines()
    lines[8] = '"an unterminated quote,pos'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_labeled(_cfg(path))
    assert "q.csv" in str(e.value) and "line" in str(e.value)


@requires_data
def test_real_datasets_load_with_their_conventions():
    sms = load_labeled(LabeledDataConfig(dataset="sms_spam", test_split=None, test_fraction=0.1))
    n = len(sms.train) + len(sms.val) + len(sms.test)
    # SMS repeats ~400 messages: copies of test messages are dropped from train/validation (the guard)
    assert abs(len(sms.test) - 557) <= 2 and sms.removed_overlap["train"] > 0
    assert n == 5574 - sum(sms.removed_overlap.values()) and abs(len(sms.val) - 557) <= 15
    assert sms.label_names == ["ham", "spam"]
    spam_share = [s.counts(2)[1] / len(s) for s in (sms.train, sms.val, sms.test)]
    assert max(spam_share) - min(spam_share) < 0.01  # stratified
    chn = load_labeled(LabeledDataConfig(dataset="chnsenticorp", test_split="validation"))
    assert len(chn.test) == 1200 and chn.test.name == "chnsenticorp:validation"
    with pytest.raises(LabelError, match="unlabelled"):
        load_labeled(LabeledDataConfig(dataset="chnsenticorp", train_split="test", test_split="validation"))
