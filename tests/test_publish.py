"""Publishing a model folder to models/<name> and loading it back by name (the CLI verb and the library)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from scratchlm.export.publish import PublishError, publish
from scratchlm.model import checkpoint as ckpt
from scratchlm.model.folder import load_model


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "scratchlm", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_publish_bf16_loads_by_name_and_matches_the_source(tiny_lm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_MODELS_DIR", str(tmp_path))
    folder = publish(tiny_lm_dir, "tiny", tmp_path, dtype="bf16", sections=[("Status", "a test model")])
    assert {"README.md", "config.json", "manifest.json", "model.safetensors", "tokenizer.json"} <= \
        {p.name for p in folder.iterdir()}
    card = (folder / "README.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["model.safetensors"]["sha256"] in card  # the card lists each file's sha256
    assert "a test model" in card
    source, published = load_model(tiny_lm_dir).model, load_model("tiny").model
    assert f"| parameters | {source.num_params():,} |" in card  # tied embedding counted once
    for (name, a), (_, b) in zip(source.state_dict().items(), published.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-2 * a.abs().max().item() + 1e-6), name  # bf16 rounding only
    assert json.loads((folder / "config.json").read_text())["published"]["dtype"] == "bf16"


def test_publish_refuses_to_overwrite_and_to_exceed_the_size_limit(tiny_lm_dir, tmp_path):
    publish(tiny_lm_dir, "tiny", tmp_path)
    with pytest.raises(PublishError, match="already exists"):
        publish(tiny_lm_dir, "tiny", tmp_path)
    publish(tiny_lm_dir, "tiny", tmp_path, overwrite=True)
    with pytest.raises(PublishError, match="over the"):
        publish(tiny_lm_dir, "small", tmp_path, max_bytes=1000)
    assert not (tmp_path / "small").exists() and not list(tmp_path.glob(".small*"))  # nothing half-written


def test_a_modified_published_file_is_refused_naming_it(tiny_lm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHLM_MODELS_DIR", str(tmp_path))
    folder = publish(tiny_lm_dir, "tiny", tmp_path)
    with open(folder / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ckpt.CheckpointError, match="tokenizer.json"):
        load_model("tiny")


def test_cli_publish_then_generate_by_name(tiny_lm_dir, tmp_path, cli_env):
    env = {**cli_env, "SCRATCHLM_MODELS_DIR": str(tmp_path)}
    proc = _cli("publish", "--model", str(tiny_lm_dir), "--name", "tiny", "--dtype", "bf16",
                "--command", "scratchlm pretrain --config tiny", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "scratchlm pretrain --config tiny" in (tmp_path / "tiny" / "README.md").read_text()
    proc = _cli("generate", "--model", "tiny", "--max-new-tokens", "5", "--temperature", "0", "To be", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("generate", "--model", "nosuch", "hi", env=env)
    assert proc.returncode != 0 and "tiny" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_publish_puts_the_run_loss_curve_in_the_card(tiny_lm_dir, tmp_path, cli_env):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_lm_dir, run / "model")
    rows = [{"kind": "train", "step": s, "loss": 5.0 - s / 10} for s in range(1, 11)]
    rows += [{"kind": "eval", "step": s, "val_loss": 5.2 - s / 10} for s in (5, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**cli_env, "SCRATCHLM_MODELS_DIR": str(tmp_path / "models")}
    proc = _cli("publish", "--model", str(run / "model"), "--name", "tiny", env=env)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "models" / "tiny"
    assert (folder / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "loss_curve.png" in json.loads((folder / "manifest.json").read_text())["files"]
    assert "![training and validation loss](loss_curve.png)" in (folder / "README.md").read_text()
    load_model(folder)  # the manifest, picture included, verifies


def test_cli_publish_of_a_checkpoint_describes_that_checkpoint(prepared, tmp_path, cli_env):
    """Bug: publishing runs/<run>/checkpoints/step_N took runs/<run>/checkpoints for the run, so the card had
    no step, tokens, data sizes or curve; and the step was the run's latest, not the one published."""
    from conftest import make_trainer

    run = tmp_path / "run"
    make_trainer(prepared, run, max_steps=4, eval_interval=2, save_interval=2, keep_last=3).fit()
    env = {**cli_env, "SCRATCHLM_MODELS_DIR": str(tmp_path / "models")}
    proc = _cli("publish", "--model", str(run / "checkpoints" / "step_0000002"), "--name", "early", env=env)
    assert proc.returncode == 0, proc.stderr
    card = (tmp_path / "models" / "early" / "README.md").read_text()
    assert "| optimizer steps | 2 " in card and "loss_curve.png" in card, card  # step 2, not the latest (4)


def test_publish_int8_folder_as_is_and_refuse_a_dtype_mismatch(task_folders, tmp_path, monkeypatch):
    from scratchlm.infer.quantize import quantize_folder

    monkeypatch.setenv("SCRATCHLM_MODELS_DIR", str(tmp_path / "models"))
    q = quantize_folder(task_folders["clf"], tmp_path / "cls-int8", "int8")
    with pytest.raises(PublishError, match="pass dtype int8"):
        publish(q, "cls", tmp_path / "models")
    with pytest.raises(PublishError, match="is not int8"):
        publish(task_folders["clf"], "cls", tmp_path / "models", dtype="int8")
    folder = publish(q, "cls", tmp_path / "models", dtype="int8")
    assert ckpt.load_tensors(folder).keys() == ckpt.load_tensors(q).keys()
    a, b = load_model(q).model, load_model("cls").model
    x = torch.randint(0, 50, (2, 12))
    torch.testing.assert_close(a(x), b(x))


def test_card_scores_table_flattens_task_metrics():
    from scratchlm.export.publish import flat_scores, scores_table

    cls = {"accuracy": 0.9, "f1_macro": 0.8, "label_names": ["ham", "spam"],
           "report": {"ham": {"f1-score": 0.95}, "spam": {"f1-score": 0.7}}}
    s2s = {"rouge": {"rouge1": 30.0, "rouge1_mean_refs": 20.0, "rouge1_precision": 1.0}, "bleu": None}
    mt = {"bleu": {"score": 35.5, "signature": "x"}, "chrf": {"score": 30.1}}
    assert flat_scores(cls) == {"accuracy": 0.9, "f1_macro": 0.8, "f1_ham": 0.95, "f1_spam": 0.7}
    assert flat_scores(s2s) == {"rouge1": 30.0, "rouge1_mean_refs": 20.0}
    assert flat_scores(mt) == {"bleu": 35.5, "chrf": 30.1}
    table = scores_table({"sms:test": cls, "tatoeba:test": mt})
    assert table.splitlines()[0] == "| data | accuracy | f1_macro | bleu | chrf | f1_ham | f1_spam |"
    assert "| sms:test | 0.9000 | 0.8000 |  |  | 0.9500 | 0.7000 |" in table


def test_task_model_card_names_its_data_licence_start_and_test_scores(prepared, tmp_path):
    """A task model's card says what it was trained on (dataset, licence, rows per split), what it started from
    and its test scores, read from the run's report.json beside the model folder."""
    from serve_utils import save_classifier

    from scratchlm.export.publish import run_sections

    run = tmp_path / "runs" / "sms_spam" / "lm"
    folder = save_classifier(run / "model", prepared.tokenizer, labels=("ham", "spam"), label_values=[0, 1],
                             recipe={"init": "runs/sms_spam_lm/model", "pretrain": "sms_spam_lm",
                                     "data": {"dataset": "sms_spam"}})
    report = {"task": "classify", "dataset": "sms_spam", "data": "sms_spam:train: 4,459 (ham 3,859, spam 600)",
              "test_split": "sms_spam:train[test 0.1, seed 1337]", "steps": 40, "train_seconds": 90.0,
              "command": "scratchlm finetune classify --config sms_spam",
              "test": {"accuracy": 0.99, "f1_macro": 0.98, "label_names": ["ham", "spam"],
                       "report": {"ham": {"f1-score": 0.995}, "spam": {"f1-score": 0.96}}}}
    (run / "report.json").write_text(json.dumps(report))
    sections = dict(run_sections(run, ckpt.read_config(folder)))
    data = sections["Task and data"]
    assert "CC BY 4.0" in data and "sms_spam:train: 4,459" in data and "sms_spam_lm" in data
    assert "`scratchlm finetune classify --config sms_spam`" in data
    assert "| sms_spam:train[test 0.1, seed 1337] | 0.9900 | 0.9800 | 0.9950 | 0.9600 |" in sections["Held-out scores"]
