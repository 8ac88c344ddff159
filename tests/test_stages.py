"""The pretraining stage a fine-tuning recipe runs on demand (stages.ensure_pretrained)."""

from __future__ import annotations

import pytest

from scratchlm import pretrain as pretrain_stage
from scratchlm.config import ConfigError
from scratchlm.stages import ensure_pretrained


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
