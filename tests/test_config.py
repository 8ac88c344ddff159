"""Typed config: validation names the field, YAML inheritance, presets under field overrides, saved config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import DATA_OVERRIDES, MODEL_OVERRIDES, requires_data

from scratchlm.config import ConfigError, from_dict, to_dict
from scratchlm.config import overrides_from_args as _overrides
from scratchlm.stages.pretrain import PretrainConfig, build_config
from scratchlm.train.config import TrainConfig


def test_unknown_field_names_it_and_lists_valid_fields():
    with pytest.raises(ConfigError) as e:
        build_config(None, ["train.lrr=1"])
    msg = str(e.value)
    assert "train.lrr" in msg
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(name in msg for name in ("lr", "max_steps", "warmup_steps", "micro_batch_size"))
    assert sum(name in msg for name in valid) == len(valid)  # every valid field is listed


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="'trian'"):
        build_config(None, ["trian.lr=1"])


@pytest.mark.parametrize("override, field", [
    ("train.max_steps=abc", "train.max_steps"),
    ("train.max_steps=1.5", "train.max_steps"),
    ("train.lr=fast", "train.lr"),
    ("train.progress=maybe", "train.progress"),
    ("train.schedule=exponential", "train.schedule"),
    ("model.n_layer=two", "model.n_layer"),
    ("data.clean.dedup=perhaps", "data.clean.dedup"),
])
def test_wrong_type_names_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        build_config(None, [override])
    assert field in str(e.value)
    assert override.split("=", 1)[1] in str(e.value)  # and shows the offending value


def test_values_are_coerced_to_the_annotated_types():
    cfg = build_config(None, ["train.max_steps=1_000", "train.lr=3e-4", "train.progress=false",
                              "train.max_time_s=none", "train.global_batch_size=64", "final_eval="])
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.progress is False
    assert cfg.train.max_time_s is None
    assert cfg.train.global_batch_size == 64
    assert cfg.final_eval == []


def test_out_of_range_value_names_the_field():
    with pytest.raises(ValueError, match="train.max_steps"):
        build_config(None, ["train.max_steps=0"])
    with pytest.raises(ValueError, match="model.n_embd"):
        build_config(None, ["model.n_embd=100", "model.n_head=3"])


def test_cli_override_forms_are_equivalent():
    forms = [["--train.lr", "3e-4"], ["--train.lr=3e-4"], ["train.lr=3e-4"]]
    assert {tuple(_overrides(f)) for f in forms} == {("train.lr=3e-4",)}
    with pytest.raises(ConfigError, match="needs a value"):
        _overrides(["--train.lr"])


def test_yaml_base_inheritance_merges_sections(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "train:\n  lr: 0.01\n  max_steps: 50\n  warmup_steps: 5\nmodel:\n  n_layer: 2\n  n_embd: 64\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("base: ../base.yaml\ntrain:\n  max_steps: 70\nmodel:\n  n_head: 4\n")
    cfg = build_config(sub / "child.yaml", ["train.warmup_steps=7"])
    assert cfg.train.max_steps == 70  # child wins
    assert cfg.train.lr == 0.01  # inherited from the base (sibling fields survive the deep merge)
    assert cfg.train.warmup_steps == 7  # the command line wins over both
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head) == (2, 64, 4)


def test_missing_base_is_a_config_error(tmp_path):
    (tmp_path / "child.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        build_config(tmp_path / "child.yaml")


def test_preset_expands_under_explicit_fields(tmp_path):
    cfg = build_config(None, ["model.preset=1m", "model.n_layer=3"])
    assert cfg.model.n_layer == 3  # the explicit field wins
    assert (cfg.model.n_head, cfg.model.n_embd) == (4, 128)  # the rest comes from the preset
    assert cfg.model_preset == "1m"
    # a preset in a recipe, a field from the command line
    (tmp_path / "r.yaml").write_text("model:\n  preset: 20m\n  dropout: 0.1\n")
    cfg = build_config(tmp_path / "r.yaml", ["model.block_size=128"])
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_kv_head) == (8, 384, 4)
    assert cfg.model.block_size == 128 and cfg.model.dropout == 0.1
    with pytest.raises(ConfigError, match="'9m'"):
        build_config(None, ["model.preset=9m"])


def test_shipped_recipe_builds():
    cfg = build_config(Path(__file__).parents[1] / "scratchlm" / "configs" / "shakespeare.yaml")
    assert cfg.model_preset == "6m" and cfg.model.n_layer == 6 and cfg.data.vocab_size == 1024


RECIPES_BY_STAGE = {
    "pretrain": ["aeslc_lm", "base", "chnsenticorp_lm", "en_small", "imdb_lm", "shakespeare", "sms_spam_lm",
                 "tatoeba_lm"],
    "classify": ["chnsenticorp", "imdb", "sms_spam"],
    "seq2seq": ["aeslc", "aeslc_annotated", "tatoeba_en_zh", "tatoeba_zh_en"],
    "distill": ["distill_imdb", "distill_tatoeba_en_zh"],
}


@pytest.mark.parametrize("stage,name", [(s, n) for s, names in RECIPES_BY_STAGE.items() for n in names])
def test_every_shipped_recipe_builds_and_validates(stage, name):
    """A typo in a recipe is found here, not an hour into a run."""
    import importlib

    from scratchlm.config import CONFIG_DIR

    cfg = importlib.import_module(f"scratchlm.stages.{stage}").build_config(CONFIG_DIR / f"{name}.yaml")
    for part in (cfg, getattr(cfg, "data", None), getattr(cfg, "train", None)):
        if hasattr(part, "validate"):
            part.validate()


def test_every_shipped_recipe_is_in_the_build_test():
    from scratchlm.config import CONFIG_DIR

    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert shipped == sorted(n for names in RECIPES_BY_STAGE.values() for n in names)


@requires_data
def test_resolved_config_is_saved_in_every_checkpoint(tmp_path, monkeypatch, cli_env):
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.stages.pretrain import run

    monkeypatch.setenv("SCRATCHLM_OFFLINE", "1")
    monkeypatch.setenv("SCRATCHLM_CACHE_DIR", cli_env["SCRATCHLM_CACHE_DIR"])  # not ~/.cache
    out = tmp_path / "run"
    overrides = [*DATA_OVERRIDES, *MODEL_OVERRIDES, f"train.out_dir={out}", "train.max_steps=4",
                 "train.save_interval=2", "train.eval_interval=2", "train.eval_batches=1", "train.keep_last=5",
                 "train.micro_batch_size=2", "train.progress=false", "train.tensorboard=false",
                 "train.compile=off", "train.device=cpu", "train.precision=fp32", "model.preset=1m",
                 "final_eval="]
    cfg = build_config(None, overrides)
    assert cfg.model.n_layer == 2 and cfg.model.n_embd == 32  # explicit fields beat the 1m preset
    run(cfg, log=lambda *a, **k: None)
    folders = sorted((out / "checkpoints").glob("step_*"))
    assert [f.name for f in folders] == ["step_0000002", "step_0000004"]
    for folder in [*folders, out / "model"]:
        saved = ckpt.read_config(folder)
        assert saved["model"]["vocab_size"] == saved["data"]["vocab_size"] == 384  # resolved, not the default
        assert saved["train"]["max_steps"] == 4 and saved["model"]["n_layer"] == 2
        assert saved["model_preset"] == "1m" and saved["task"] == "lm"
        assert saved["tokenizer_fingerprint"]
        # the saved dict is the complete resolved config: it rebuilds the same dataclass
        rebuilt = from_dict(PretrainConfig, {k: v for k, v in saved.items()
                                             if k in {f.name for f in dataclasses.fields(PretrainConfig)}})
        assert to_dict(rebuilt) == to_dict(cfg)
    assert json.loads((out / "config.json").read_text())["train"]["out_dir"] == str(out)
