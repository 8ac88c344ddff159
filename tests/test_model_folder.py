"""The one model folder loader: published names (``$SCRATCHLM_MODELS_DIR``, then ``models/``), the manifest
check, and every way in (the Python API, a verb's --model, a recipe's ``init:``) going through it."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import DATA_OVERRIDES, TRAIN_OVERRIDES

import scratchlm
from scratchlm.cli import main
from scratchlm.model import checkpoint as ckpt
from scratchlm.model.folder import TaskError, load_decoder, load_model, published_models, resolve_model

QUIET = lambda *a, **k: None  # noqa: E731


@pytest.fixture
def models_dir(tiny_lm_dir, tmp_path, monkeypatch):
    """A models folder publishing the tiny decoder as ``tiny`` (with its model card)."""
    root = tmp_path / "models"
    shutil.copytree(tiny_lm_dir, root / "tiny")
    (root / "tiny" / "README.md").write_text("# tiny\n\nA test model.\n", "utf-8")
    (root / "notes").mkdir()  # no config.json: not a model
    monkeypatch.setenv("SCRATCHLM_MODELS_DIR", str(root))
    monkeypatch.chdir(tmp_path)  # no folder named like the model here
    return root


def test_a_published_name_resolves_to_its_folder(models_dir):
    assert published_models()["tiny"] == models_dir / "tiny"
    assert "notes" not in published_models()
    assert resolve_model("tiny") == models_dir / "tiny"
    loaded = load_model("tiny")
    assert loaded.task == "lm" and loaded.folder == models_dir / "tiny"
    assert scratchlm.load("tiny").name == "tiny"


def test_a_path_still_works_and_wins_over_a_name(models_dir, tiny_lm_dir, tmp_path):
    assert load_model(tiny_lm_dir).folder == tiny_lm_dir
    shutil.copytree(tiny_lm_dir, tmp_path / "tiny")  # ./tiny now exists: the path is taken
    assert resolve_model("tiny").resolve() == (tmp_path / "tiny").resolve()


def test_an_unknown_name_lists_the_published_ones(models_dir):
    with pytest.raises(FileNotFoundError, match=r"model folder not found: nope .*published: tiny"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="published: tiny"):
        scratchlm.load("nope")


def test_no_published_models_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_MODELS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("scratchlm.model.folder.REPO_MODELS", tmp_path / "also-empty")
    with pytest.raises(FileNotFoundError, match="none is published in .*empty"):
        load_model("base")


def test_a_manifest_mismatch_names_the_file(models_dir):
    config = models_dir / "tiny" / "config.json"
    saved = config.read_text("utf-8")
    config.write_text(saved.replace('"n_layer": 2', '"n_layer": 3'), "utf-8")  # same size, other bytes
    with pytest.raises(ckpt.CheckpointError, match=r"tiny/config\.json does not match its sha256"):
        load_model("tiny")
    config.write_text(saved, "utf-8")
    (models_dir / "tiny" / "tokenizer.json").write_text("{}", "utf-8")
    with pytest.raises(ckpt.CheckpointError, match=r"tiny/tokenizer\.json has 2 bytes but the manifest says"):
        scratchlm.load("tiny")


def test_the_loader_refuses_a_task_the_caller_cannot_use(models_dir):
    with pytest.raises(TaskError, match="holds a 'lm' model, not a classify model"):
        load_model("tiny", tasks=("classify",))
    assert load_decoder("tiny").model.cfg.n_layer == 2


def test_generate_verb_takes_a_published_name(models_dir, capsys):
    assert main(["generate", "--model", "tiny", "--max-new-tokens", "3", "--temperature", "0", "ROMEO:"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["generate", "--model", "nope", "x"]) == 2
    assert "published: tiny" in capsys.readouterr().err


def test_init_in_a_recipe_takes_a_published_name(models_dir, tiny_lm_dir, tmp_path):
    """Continued pretraining from ``init: tiny``: the published weights, architecture and tokenizer."""
    from scratchlm.stages import pretrain

    cfg = pretrain.build_config(None, [*DATA_OVERRIDES, *TRAIN_OVERRIDES, "init=tiny", "train.max_steps=1",
                                       f"train.out_dir={tmp_path / 'cont'}", "final_eval=[]"])
    pretrain.ensure_pretrained(cfg.init, None)  # a published name exists: nothing to pretrain
    report = pretrain.run(cfg, log=QUIET)
    config = json.loads((tmp_path / "cont" / "model" / "config.json").read_text("utf-8"))
    assert config["backbone"]["folder"] == str(models_dir / "tiny")
    assert load_model(report["model_dir"]).model.cfg == load_model(tiny_lm_dir).model.cfg
