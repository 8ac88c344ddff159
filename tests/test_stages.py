"""The pretraining stage a fine-tuning recipe runs on demand (stages.pretrain.ensure_pretrained)."""

from __future__ import annotations

import pytest

from scratchlm.config import ConfigError
from scratchlm.stages import pretrain as pretrain_stage
from scratchlm.stages.pretrain import ensure_pretrained


def _capture(monkeypatch) -> list:
    seen = []
    monkeypatch.setattr(pretrain_stage, "run", lambda cfg, log=print: seen.append(cfg))
    return seen


def test_runs_the_recipe_resuming_and_quiet_when_the_stage_is_quiet(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    seen = _capture(monkeypatch)
    ensure_pretrained("runs/en_small/model", "en_small", data_dir="/data", log=lambda m: None, progress=False)
    (cfg,) = seen
    assert cfg.train.resume and cfg.data.data_dir == "/data"
    assert cfg.train.progress is False  # `--train.progress false` reaches the nested pretraining stage


def test_keeps_the_recipe_progress_bar_by_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    seen = _capture(monkeypatch)
    ensure_pretrained("runs/en_small/model", "en_small", log=lambda m: None)
    assert seen[0].train.progress is True


def test_existing_model_is_not_retrained(monkeypatch, tmp_path):
    seen = _capture(monkeypatch)
    (tmp_path / "config.json").write_text("{}")
    ensure_pretrained(str(tmp_path), "en_small")
    assert seen == []


def test_init_that_the_recipe_does_not_make_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _capture(monkeypatch)
    with pytest.raises(ConfigError, match="is not what pretraining recipe 'en_small' makes"):
        ensure_pretrained("elsewhere/model", "en_small")
    with pytest.raises(ConfigError, match="pretrain a model first"):
        ensure_pretrained("elsewhere/model", None)


def test_continued_pretraining_starts_from_the_init_weights_and_records_the_lineage(tiny_lm_dir, tmp_path):
    """`init:` in a pretraining recipe: the model folder's weights, architecture and tokenizer, and its
    corpora recorded under `backbone` so the leakage checks downstream see them."""
    import json

    import torch
    from conftest import DATA_OVERRIDES, TRAIN_OVERRIDES

    from scratchlm.data.labeled import assert_not_pretrained_on
    from scratchlm.data.prepare import LeakageError
    from scratchlm.model.folder import load_model

    cfg = pretrain_stage.build_config(None, [*DATA_OVERRIDES, *TRAIN_OVERRIDES, f"init={tiny_lm_dir}",
                                             "model.n_layer=5", f"train.out_dir={tmp_path / 'cont'}",
                                             "train.max_steps=1", "train.lr=1e-9", "train.weight_decay=0",
                                             "final_eval=[]"])
    report = pretrain_stage.run(cfg, log=lambda *a, **k: None)
    base, cont = load_model(tiny_lm_dir), load_model(report["model_dir"])
    assert cont.model.cfg == base.model.cfg  # the recipe's `model` section gives way to the init's
    assert cont.tokenizer.fingerprint == base.tokenizer.fingerprint
    for (name, a), b in zip(base.model.state_dict().items(), cont.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)  # one step at lr 1e-9: the init's weights
    config = json.loads((tmp_path / "cont" / "model" / "config.json").read_text())
    assert config["backbone"]["data"]["corpora"][0]["source"] == "tinyshakespeare"
    with pytest.raises(LeakageError):  # the base's corpora count: pretend its corpus was a test split
        bad = {**config, "backbone": {"data": {"corpora": [{"source": "imdb", "split": "test"}]}}}
        assert_not_pretrained_on(bad, "imdb", "test")


def test_continued_pretraining_refuses_another_tokenizer(tiny_lm_dir, tmp_path):
    from conftest import DATA_OVERRIDES, TRAIN_OVERRIDES

    cfg = pretrain_stage.build_config(None, [*DATA_OVERRIDES, *TRAIN_OVERRIDES, f"init={tiny_lm_dir}",
                                             f"data.tokenizer={tmp_path}", f"train.out_dir={tmp_path / 'c'}"])
    with pytest.raises(ConfigError, match="keeps the model's tokenizer"):
        pretrain_stage.run(cfg, log=lambda *a, **k: None)
