"""The base model's data and schedule: the new corpora, line unwrapping, WSD, spread validation windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shakespeare_dir

from scratchlm.data.clean import unwrap_lines
from scratchlm.data.registry import DATASETS
from scratchlm.data.sources import load_texts
from scratchlm.tasks.lm import LMTask, evaluate_tokens
from scratchlm.train.config import TrainConfig
from scratchlm.train.optim import lr_at

NEW_CORPORA = ["gutenberg_en", "openstax_ccby_en", "shu_books_zh", "lctt_zh", "lawrefbook_zh", "tidb_docs_zh"]


@pytest.mark.parametrize("name", NEW_CORPORA)
def test_new_pretraining_corpora_are_registered_for_training_only(name):
    spec = DATASETS[name]
    assert spec.general_text and spec.pretrain_splits == ("train",)
    assert spec.split_names == ("train",)  # prepare holds out whole documents for validation
    assert spec.license != "unknown"


@pytest.mark.skipif(shakespeare_dir() is None, reason="needs the shared data folder")
def test_new_corpus_reads_from_the_data_folder():
    texts = load_texts("tidb_docs_zh", "train", data_dir=shakespeare_dir())
    assert len(texts) == 1083
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in t[:200]) for t in texts) > 1000


def test_unwrap_lines_joins_wrapped_lines_and_keeps_paragraphs():
    text = "It was a dark\nand stormy night.\n\nThe rain fell\r\nin torrents.\n\n\nEnd"
    assert unwrap_lines([text]) == ["It was a dark and stormy night.\n\nThe rain fell in torrents.\n\n\nEnd"]
    assert unwrap_lines(["one line", ""]) == ["one line", ""]


def test_wsd_schedule_is_constant_then_decays_over_the_last_fraction():
    cfg = TrainConfig(schedule="wsd", lr=1.0, warmup_steps=10, max_steps=110, decay_fraction=0.2, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert [lr_at(s, cfg) for s in (10, 50, 90)] == [1.0, 1.0, 1.0]  # stable until 80% of the post-warmup horizon
    assert lr_at(100, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    decay = [lr_at(s, cfg) for s in range(90, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    with pytest.raises(ValueError, match="decay_fraction"):
        TrainConfig(decay_fraction=0).validate()


class _Shard:
    def __init__(self, tokens):
        self.tokens, self.prefix = tokens, "mem"


def test_validation_windows_spread_over_the_whole_shard():
    """The validation shard holds the corpora one after another; a capped evaluation must see all of them."""
    val = _Shard(np.arange(10_000, dtype=np.uint16))
    task = LMTask(torch.nn.Linear(1, 1), _Shard(np.zeros(100, dtype=np.uint16)), val, block_size=10)
    starts = task.val_windows(5)
    assert len(starts) == 5 and starts[0] == 0 and starts[-1] >= 9_000
    assert list(task.val_windows()) == list(range(0, 9_990, 10))


def test_evaluate_tokens_caps_tokens_with_spread_windows():
    from scratchlm.model.transformer import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, block_size=16)).eval()
    tokens = np.random.default_rng(0).integers(0, 64, 2_000).astype(np.uint16)
    full = evaluate_tokens(model, tokens)
    capped = evaluate_tokens(model, tokens, max_tokens=160)
    assert capped["val_loss"] != full["val_loss"]
    assert abs(capped["val_loss"] - full["val_loss"]) < 0.5  # same model, a tenth of the windows


def test_matmul_peak_cache_keeps_the_best_measurement(tmp_path, monkeypatch):
    """A peak measured on busy cores reads low; caching it would inflate every MFU computed from it."""
    import json

    from scratchlm.train import hardware

    monkeypatch.setenv("SCRATCHLM_CACHE_DIR", str(tmp_path))
    first = hardware.measure_matmul_peak(torch.device("cpu"), torch.float32, n=64, seconds=0.05)
    cache = tmp_path / "matmul_peak.json"
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(json.dumps({key: first * 1000}))  # a better earlier measurement
    assert hardware.measure_matmul_peak(torch.device("cpu"), torch.float32, n=64, seconds=0.05) == first * 1000
    cache.write_text(json.dumps({key: 1.0}))  # a measurement taken under contention
    assert hardware.measure_matmul_peak(torch.device("cpu"), torch.float32, n=64, seconds=0.05) > 1.0
    assert json.loads(cache.read_text())[key] > 1.0


def test_a_list_override_in_brackets_is_a_list():
    """`--final_eval '[]'` meant no final evaluation, and was read as one text named '[]'."""
    from scratchlm.stages.pretrain import build_config

    assert build_config(None, ["final_eval=[]"]).final_eval == []
    assert build_config(None, ["final_eval=[wikitext2:test, imdb:train]"]).final_eval == ["wikitext2:test",
                                                                                            "imdb:train"]
    assert build_config(None, ["final_eval=wikitext2:test,imdb:train"]).final_eval == ["wikitext2:test",
                                                                                         "imdb:train"]


def test_scoring_pass_shows_progress_and_reports_its_throughput(capsys):
    from scratchlm.model.transformer import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, block_size=16)).eval()
    tokens = np.random.default_rng(0).integers(0, 64, 500).astype(np.uint16)
    quiet = evaluate_tokens(model, tokens)
    shown = evaluate_tokens(model, tokens, progress="score test")
    assert "score test" in capsys.readouterr().err
    assert shown["val_loss"] == quiet["val_loss"] and "tokens_per_s" not in quiet
    assert shown["tokens_per_s"] > 0 and shown["forward_gflops_per_s"] > 0


@pytest.mark.skipif(shakespeare_dir() is None, reason="needs the shared data folder")
def test_exclude_splits_keeps_a_task_test_set_out_of_continued_pretraining(tmp_path):
    """ChnSentiCorp's train split repeats 335 of the 1,200 validation reviews (the recipe's test set): its
    in-domain LM must not train on them, even unlabelled."""
    from scratchlm.data.labeled import text_key
    from scratchlm.data.prepare import CorpusConfig, DataConfig, DataError, _exclude, prepare

    corpus = CorpusConfig("chnsenticorp", val_split=None, exclude_splits=["validation"])
    cfg = DataConfig(corpora=[corpus], data_dir=str(shakespeare_dir()), vocab_size=400)
    train = load_texts("chnsenticorp", "train", data_dir=shakespeare_dir())
    kept, _, n = _exclude(cfg, corpus, train, [])
    held = {text_key(t) for t in load_texts("chnsenticorp", "validation", data_dir=shakespeare_dir())}
    assert n >= 335 and len(kept) == len(train) - n and not {text_key(t) for t in kept} & held
    logs: list[str] = []
    prep = prepare(cfg, tmp_path / "prep", progress=False, log=logs.append)
    assert f"prepare: removed {n} documents of chnsenticorp that also occur in validation" in logs
    assert json.loads((prep.folder / "cleaning.json").read_text())["chnsenticorp"]["excluded"] == n
    with pytest.raises(DataError, match="own split"):
        CorpusConfig("chnsenticorp", exclude_splits=["train"]).validate()
    with pytest.raises(DataError, match="named dataset"):
        CorpusConfig(str(tmp_path / "local.txt"), exclude_splits=["test"]).validate()


@pytest.mark.skipif(shakespeare_dir() is None, reason="needs the shared data folder")
def test_task_recipe_corpus_is_the_classifier_training_text_and_never_its_carved_test(tmp_path):
    """SMS spam carves its test messages from its one file: the in-domain LM reads the recipe's training rows
    only, exactly as the classifier gets them."""
    from scratchlm.config import ConfigError, find_recipe, from_dict, load_recipe
    from scratchlm.data.labeled import LabeledDataConfig, assert_not_pretrained_on, load_labeled, text_key
    from scratchlm.data.prepare import CorpusConfig, DataConfig, DataError, _split_docs

    cfg = DataConfig(corpora=[CorpusConfig("sms_spam", task_recipe="sms_spam")], data_dir=str(shakespeare_dir()))
    train, val = _split_docs(cfg, cfg.corpora[0])
    data_cfg = from_dict(LabeledDataConfig, load_recipe(find_recipe("sms_spam"))["data"])
    data_cfg.data_dir = str(shakespeare_dir())
    data = load_labeled(data_cfg, log=lambda *a: None)
    assert train == data.train.texts and val == data.val.texts
    assert not {text_key(t) for t in train + val} & {text_key(t) for t in data.test.texts}
    # its validation rows are the carve's, not ChnSentiCorp's `validation` split (that recipe's test set)
    lm = {"data": {"corpora": [{"source": "chnsenticorp", "task_recipe": "chnsenticorp"}]}}
    assert_not_pretrained_on(lm, "chnsenticorp", "validation")
    with pytest.raises(DataError, match="task_recipe"):
        CorpusConfig("sms_spam", split="test2", task_recipe="sms_spam").validate()
    with pytest.raises(DataError, match="is about dataset 'sms_spam'"):
        _split_docs(cfg, CorpusConfig("chnsenticorp", task_recipe="sms_spam"))
    with pytest.raises(ConfigError, match="classification recipe"):
        _split_docs(cfg, CorpusConfig("sms_spam", task_recipe="base"))
