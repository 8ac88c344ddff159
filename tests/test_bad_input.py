"""Bad input fails loudly and says what is wrong: data, tokenizer/checkpoint mismatches, corrupted files,
divergence, a full disk, and a mistyped command line."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, lm_task, make_trainer, requires_data
from safetensors.torch import load_file

from scratchlm.cli import main
from scratchlm.data.prepare import CorpusConfig, DataConfig, LeakageError, prepare
from scratchlm.data.sources import DataError
from scratchlm.model import checkpoint as ckpt
from scratchlm.model.folder import load_model
from scratchlm.tokenizer import MIN_VOCAB_SIZE, train_tokenizer
from scratchlm.train.trainer import TrainingDivergedError


def _prepare(tmp_path, *corpora: CorpusConfig):
    cfg = DataConfig(corpora=list(corpora), vocab_size=MIN_VOCAB_SIZE + 20)
    return prepare(cfg, tmp_path / "data", progress=False, log=lambda *a, **k: None)


# ---- data ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["", "  \n\n \t\n"], ids=["empty", "whitespace"])
def test_empty_corpus_file(tmp_path, content):
    f = tmp_path / "corpus.txt"
    f.write_text(content)
    with pytest.raises(DataError, match="empty") as e:
        _prepare(tmp_path, CorpusConfig(str(f)))
    assert str(f) in str(e.value)


def test_corpus_with_nothing_left_after_cleaning(tmp_path):
    f = tmp_path / "tags.jsonl"
    f.write_text('{"text": "<b></b>"}\n{"text": "<p> </p>"}\n')
    with pytest.raises(DataError, match="no text left after cleaning") as e:
        _prepare(tmp_path, CorpusConfig(str(f)))
    assert str(f) in str(e.value)


def test_missing_text_column_lists_available_columns(tmp_path):
    f = tmp_path / "reviews.jsonl"
    f.write_text('{"review": "good film", "stars": 5}\n{"review": "bad film", "stars": 1}\n')
    with pytest.raises(DataError) as e:
        _prepare(tmp_path, CorpusConfig(str(f)))  # the default column is "text"
    msg = str(e.value)
    assert "'text'" in msg and "review" in msg and "stars" in msg


@requires_data
def test_missing_column_of_a_named_dataset_lists_available_columns(tmp_path):
    with pytest.raises(DataError) as e:
        _prepare(tmp_path, CorpusConfig("sms_spam", column="message"))
    msg = str(e.value)
    assert "'message'" in msg and "sms" in msg and "label" in msg


def test_unknown_dataset_and_held_out_split(tmp_path):
    with pytest.raises(DataError, match="tinyshakespeare"):  # suggests the close match
        _prepare(tmp_path, CorpusConfig("tinyshakespear"))
    with pytest.raises(LeakageError, match="test"):
        _prepare(tmp_path, CorpusConfig("imdb", split="test"))


# ---- checkpoints and model folders ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    out = tmp_path_factory.mktemp("trained")
    make_trainer(prepared, out, max_steps=2, eval_interval=0).fit()
    return out


@pytest.fixture
def model_dir(trained, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(trained / "model", target)
    load_model(target)  # intact before the test tampers with it
    return target


def _refresh_manifest(folder: Path) -> None:
    """What someone 'fixing' a hand-edited folder would do: recompute every hash."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ckpt.MANIFEST)
    manifest = {"files": {str(p.relative_to(folder)): {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                                                       "bytes": p.stat().st_size} for p in files}}
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def other_tokenizer(prepared):
    texts = ["the quick brown fox jumps over the lazy dog " * 20, "pack my box with five dozen liquor jugs " * 20]
    tok = train_tokenizer(texts, MIN_VOCAB_SIZE + 30)
    assert tok.fingerprint != prepared.tokenizer.fingerprint
    assert tok.vocab_size <= prepared.tokenizer.vocab_size  # only the fingerprint can tell them apart
    return tok


def test_swapped_tokenizer_fails_the_manifest(model_dir, other_tokenizer):
    other_tokenizer.save(model_dir)
    with pytest.raises(ckpt.CheckpointError, match="tokenizer.json"):
        load_model(model_dir)


def test_swapped_tokenizer_fails_the_fingerprint_check(model_dir, other_tokenizer):
    other_tokenizer.save(model_dir)
    with pytest.raises(ckpt.CheckpointError, match="tokenizer mismatch"):
        load_model(model_dir, verify=False)
    _refresh_manifest(model_dir)  # a fixed-up manifest does not hide the mismatch either
    with pytest.raises(ckpt.CheckpointError, match="tokenizer mismatch"):
        load_model(model_dir)


def test_truncated_weights(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors.*truncated"):
        load_model(model_dir)
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        load_model(model_dir, verify=False)


def test_hand_edited_config(model_dir):
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["n_layer"] = 3
    cfg_path.write_text(json.dumps(cfg, indent=2))
    with pytest.raises(ckpt.CheckpointError, match="config.json"):
        load_model(model_dir)
    with pytest.raises(ckpt.CheckpointError, match="layers.2"):  # without the manifest: weights don't fit
        load_model(model_dir, verify=False)


def test_resume_from_truncated_checkpoint_is_refused(tmp_path, prepared):
    make_trainer(prepared, tmp_path, max_steps=2, eval_interval=0).fit()
    weights = ckpt.resolve(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        make_trainer(prepared, tmp_path, max_steps=4, eval_interval=0, resume=True).fit()


# ---- training ------------------------------------------------------------------------------------------

class NaNAfter(torch.nn.Module):
    """Wraps a loss module: from optimizer step ``start`` on (counted in calls), the loss is NaN."""

    def __init__(self, inner: torch.nn.Module, start_call: int) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.start_call = start_call

    def forward(self, batch):
        self.calls += 1
        s, n = self.inner(batch)
        return (s * float("nan") if self.calls >= self.start_call else s), n


def _assert_all_checkpoints_finite(ckpt_dir: Path) -> list[str]:
    names = sorted(p.name for p in ckpt_dir.glob("step_*"))
    assert names
    for name in names:
        ckpt.verify(ckpt_dir / name)
        for f in ("model.safetensors", "optimizer.safetensors"):
            for k, t in load_file(str(ckpt_dir / name / f)).items():
                assert torch.isfinite(t).all(), f"{name}/{f}: {k} is not finite"
    return names


def test_nan_loss_stops_with_training_diverged(tmp_path, prepared):
    task = lm_task(prepared)
    loss_module = NaNAfter(task.loss_module(), start_call=4)
    task.loss_module = lambda: loss_module
    trainer = make_trainer(prepared, tmp_path, task=task, max_steps=50, eval_interval=0, save_interval=1,
                           keep_last=10, max_bad_steps=3)
    with pytest.raises(TrainingDivergedError, match="3 consecutive non-finite") as e:
        trainer.fit()
    assert "step 6" in str(e.value) and trainer.step == 6  # steps 4, 5, 6 were bad
    names = _assert_all_checkpoints_finite(tmp_path / "checkpoints")
    assert "step_0000003" in names
    assert not (tmp_path / "checkpoints" / "step_0000006").exists()


def test_huge_learning_rate_diverges_without_nan_checkpoints(tmp_path, prepared):
    trainer = make_trainer(prepared, tmp_path, max_steps=50, lr=1e30, warmup_steps=0, eval_interval=0,
                           save_interval=1, keep_last=10, max_bad_steps=2)
    with pytest.raises(TrainingDivergedError, match="train.lr"):
        trainer.fit()
    _assert_all_checkpoints_finite(tmp_path / "checkpoints")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, prepared, monkeypatch):
    real_save = ckpt.save_file
    model_saves = []

    def save_file(tensors, filename, metadata=None):
        if filename.endswith("model.safetensors"):
            model_saves.append(filename)
            if len(model_saves) == 2:
                Path(filename).write_bytes(b"\0" * 64)  # a partial file, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    trainer = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=0, save_interval=2)
    with pytest.raises(ckpt.CheckpointError, match="No space left on device") as e:
        trainer.fit()
    assert "step_0000004" in str(e.value) and "previous checkpoint is unchanged" in str(e.value)
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["LATEST", "step_0000002"]  # no half-written folder
    folder = ckpt.resolve(tmp_path)
    assert folder.name == "step_0000002"
    ckpt.verify(folder)
    loaded = load_model(folder)
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
    # once there is space again, the run resumes from it and finishes
    monkeypatch.setattr(ckpt, "save_file", real_save)
    res = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=0, save_interval=2, resume=True).fit()
    assert res.step == 6 and ckpt.resolve(tmp_path).name == "step_0000006"


# ---- command line --------------------------------------------------------------------------------------

def test_cli_unknown_field_exits_2_naming_it():
    proc = subprocess.run([sys.executable, "-m", "scratchlm.cli", "pretrain", "--train.lrr", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2
    assert "train.lrr" in proc.stderr and "valid fields" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, needle", [
    (["pretrain", "--train.max_steps", "abc"], "train.max_steps"),
    (["pretrain", "--model.preset", "huge"], "model.preset"),
    (["pretrain", "--config", "no_such_recipe"], "no_such_recipe"),
    (["pretrain", "--train.lr"], "--train.lr"),
])
def test_cli_bad_arguments_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
