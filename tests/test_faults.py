"""Fault injection: disk full, corrupt checkpoint files, OS errors and bad command lines end in a message that
names the path and what to do, never in a traceback or a lost file (docs/reliability.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_command, make_trainer, run_cli
from safetensors import SafetensorError

from scratchlm.cli import main
from scratchlm.model import checkpoint as ckpt

TINY = ["train.max_steps=2", "train.eval_interval=0", "train.save_interval=1"]


# ---- a failed checkpoint save ---------------------------------------------------------------------------

def test_disk_full_as_safetensors_reports_it_stops_cleanly_and_keeps_the_last_good_checkpoint(
        tmp_path, prepared, monkeypatch):
    """safetensors reports ENOSPC as SafetensorError (not OSError): it used to escape as a traceback."""
    real = ckpt.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        if filename.endswith("model.safetensors"):
            calls.append(filename)
            if len(calls) == 2:
                raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                      'message: "No space left on device" })')
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    trainer = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=0, save_interval=2)
    with pytest.raises(ckpt.CheckpointSaveError) as e:
        trainer.fit()
    msg = str(e.value)
    assert "No space left on device" in msg and "disk is full" in msg
    assert "step_0000002" in msg and "--resume" in msg  # names the checkpoint kept and what to do
    assert ckpt.resolve(tmp_path).name == "step_0000002"
    ckpt.verify(ckpt.resolve(tmp_path))
    assert not list((tmp_path / "checkpoints").glob(".step_*"))


def test_pointer_write_failure_is_a_save_error(tmp_path, prepared, monkeypatch):
    real = ckpt.set_pointer
    n = []

    def set_pointer(d, name, target):
        n.append(target)
        if len(n) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(d) / name))
        return real(d, name, target)

    monkeypatch.setattr(ckpt, "set_pointer", set_pointer)
    with pytest.raises(ckpt.CheckpointSaveError, match="step_0000001"):
        make_trainer(prepared, tmp_path, max_steps=4, eval_interval=0, save_interval=1).fit()
    assert ckpt.read_pointer(tmp_path / "checkpoints", ckpt.LATEST) == "step_0000001"


def test_cli_disk_full_during_save_is_one_line_and_exit_nonzero(tmp_path, cli_env):
    """The CLI run: a sitecustomize makes the second model.safetensors write fail with ENOSPC."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, safetensors.torch as st\n"
        "_real = st.save_file\n_n = [0]\n"
        "def save_file(t, f, metadata=None):\n"
        "    if f.endswith('model.safetensors'):\n"
        "        _n[0] += 1\n"
        "        if _n[0] == 2:\n"
        "            raise OSError(errno.ENOSPC, 'No space left on device', f)\n"
        "    return _real(t, f, metadata=metadata)\n"
        "st.save_file = save_file\n"
        "import scratchlm.model.checkpoint as c\nc.save_file = save_file\n")
    env = {**cli_env, "PYTHONPATH": os.pathsep.join([str(hook), cli_env["PYTHONPATH"]])}
    out = tmp_path / "run"
    proc = run_cli(out, "train.max_steps=4", "train.eval_interval=0", "train.save_interval=1", env=env, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "No space left on device" in proc.stderr and "step_0000001" in proc.stderr
    assert ckpt.resolve(out / "checkpoints").name == "step_0000001"


# ---- resume from a damaged LATEST -----------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["optimizer", "optimizer_json", "weights", "trainer_state", "manifest",
                                    "config", "tokenizer", "missing_file", "empty_folder"])
def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path, prepared, damage, capsys):
    make_trainer(prepared, tmp_path, max_steps=4, eval_interval=0, save_interval=2, keep_last=5).fit()
    ck = tmp_path / "checkpoints"
    latest = ck / "step_0000004"
    assert ckpt.read_pointer(ck, ckpt.LATEST) == latest.name
    files = {"optimizer": "optimizer.safetensors", "optimizer_json": "optimizer.json", "weights": "model.safetensors",
             "trainer_state": "trainer_state.json", "manifest": ckpt.MANIFEST, "config": "config.json",
             "tokenizer": "tokenizer.json"}
    if damage == "missing_file":
        (latest / "optimizer.safetensors").unlink()
    elif damage == "empty_folder":
        for f in latest.iterdir():
            f.unlink()
    else:
        p = latest / files[damage]
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2] + b"\x00garbage")
    capsys.readouterr()
    res = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=0, save_interval=2, keep_last=5,
                       resume=True).fit()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "falling back to step_0000002" in text and "damaged" in text
    assert "resumed from" in text and "at step 2" in text
    assert res.step == 6 and ckpt.resolve(tmp_path).name == "step_0000006"
    ckpt.verify(ck / "step_0000004")  # the damaged folder was replaced by a good one when the run got there


def test_resume_fallback_matches_an_uninterrupted_run(tmp_path, prepared):
    make_trainer(prepared, tmp_path / "ref", max_steps=4, eval_interval=0, save_interval=2, keep_last=5).fit()
    run = tmp_path / "run"
    make_trainer(prepared, run, max_steps=4, eval_interval=0, save_interval=2, keep_last=5).fit()
    opt = run / "checkpoints" / "step_0000004" / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:50])
    make_trainer(prepared, run, max_steps=4, eval_interval=0, save_interval=2, keep_last=5, resume=True).fit()
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ref" / "checkpoints" / "step_0000004" / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / "step_0000004" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_every_checkpoint_damaged_is_refused_naming_them(tmp_path, prepared):
    make_trainer(prepared, tmp_path, max_steps=4, eval_interval=0, save_interval=2, keep_last=5).fit()
    for name in ("step_0000002", "step_0000004"):
        p = tmp_path / "checkpoints" / name / "optimizer.safetensors"
        p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ckpt.CheckpointError, match="no older checkpoint.*verifies either.*step_0000002"):
        make_trainer(prepared, tmp_path, max_steps=6, eval_interval=0, save_interval=2, resume=True).fit()


def test_cli_resume_with_corrupt_latest_falls_back(tmp_path, cli_env):
    out = tmp_path / "run"
    run_cli(out, "train.max_steps=4", "train.eval_interval=0", "train.save_interval=2", "train.keep_last=5",
            env=cli_env)
    p = out / "checkpoints" / "step_0000004" / "optimizer.safetensors"
    p.write_bytes(p.read_bytes()[:64])
    proc = run_cli(out, "train.max_steps=4", "train.eval_interval=0", "train.save_interval=2", "train.keep_last=5",
                   "--resume", env=cli_env)
    assert "falling back to step_0000002" in proc.stdout + proc.stderr
    ckpt.verify(out / "checkpoints" / "step_0000004")


# ---- OS errors on the command line ----------------------------------------------------------------------

def test_out_dir_that_is_a_file(tmp_path, cli_env, capsys):
    f = tmp_path / "afile"
    f.write_text("not a folder")
    proc = run_cli(f, *TINY, env=cli_env, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is a file, not a folder" in proc.stderr and str(f) in proc.stderr
    assert f.read_text() == "not a folder"
    proc = run_cli(f / "sub", *TINY, env=cli_env, check=False)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_os_errors_in_the_cli_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    from scratchlm.cli import train as train_cli

    def boom(args, extra):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.bin"))

    monkeypatch.setattr(train_cli, "cmd_prepare", boom)
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(tmp_path / "x.bin") in err and "disk is full" in err
    for code, needle in ((errno.EACCES, "permission"), (errno.ENOENT, "does not exist"),
                         (errno.ENOTDIR, "is a file, not a folder"), (errno.EISDIR, "is a folder")):
        monkeypatch.setattr(train_cli, "cmd_prepare",
                            lambda a, e, code=code: (_ for _ in ()).throw(OSError(code, os.strerror(code), "p")))
        assert main(["prepare"]) == 2
        assert needle in capsys.readouterr().err
    with pytest.raises(OSError):
        main(["--debug", "prepare"])
    with pytest.raises(OSError):
        main(["prepare", "--debug"])


def test_prepare_disk_full_names_the_folder(tmp_path, monkeypatch):
    """numpy's tofile says only "N requested and M written" when the disk fills up."""
    from scratchlm.data import prepare as prep
    from scratchlm.data.prepare import CorpusConfig, DataConfig

    def write_shard(*a, **k):
        raise OSError("4096 requested and 0 written")

    monkeypatch.setattr(prep, "write_shard", write_shard)
    (tmp_path / "c.txt").write_text("hello world, some text\n" * 200)
    cfg = DataConfig(corpora=[CorpusConfig(source=str(tmp_path / "c.txt"))], vocab_size=300)
    with pytest.raises(OSError) as e:
        prep.prepare(cfg, tmp_path / "data", progress=False, log=lambda *a: None)
    assert e.value.errno == errno.ENOSPC and str(tmp_path / "data") in str(e.value)
    assert not (tmp_path / "data" / "prepare.json").exists()  # never reused half-written


def test_write_atomic_never_leaves_a_partial_file(tmp_path):
    from scratchlm.train.fsutil import write_atomic

    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def write(tmp):
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        write_atomic(target, write)
    assert e.value.errno == errno.ENOSPC and str(target) in str(e.value)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# ---- recipes ----------------------------------------------------------------------------------------------

def test_recipe_whose_base_is_itself(tmp_path, capsys):
    r = tmp_path / "loop.yaml"
    r.write_text("base: loop.yaml\ntrain:\n  lr: 1e-3\n")
    assert main(["pretrain", "--config", str(r)]) == 2
    err = capsys.readouterr().err
    assert "cycle" in err and "loop.yaml" in err and "recursion" not in err
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\n")
    b.write_text("base: a.yaml\n")
    assert main(["pretrain", "--config", str(a)]) == 2
    assert "cycle" in capsys.readouterr().err


def test_non_utf8_recipe_names_the_file(tmp_path, capsys):
    r = tmp_path / "latin1.yaml"
    r.write_bytes("train:\n  lr: 1e-3  # caf\xe9\n".encode("latin-1"))
    assert main(["pretrain", "--config", str(r)]) == 2
    err = capsys.readouterr().err
    assert str(r) in err and "UTF-8" in err


def test_error_hints_name_cli_flags(tmp_path, capsys, task_folders):
    inp = tmp_path / "in.csv"
    inp.write_text("body,id\nhello there,1\n")
    assert main(["classify", "--model", str(task_folders["clf"]), "--input", str(inp)]) == 2
    err = capsys.readouterr().err
    assert "--column" in err and "column=" not in err
    inp.write_text("text,id\nhello there,1\n,2\n")
    assert main(["classify", "--model", str(task_folders["clf"]), "--input", str(inp)]) == 2
    err = capsys.readouterr().err
    assert "row 2" in err and "dropna" not in err


def test_zero_or_negative_epochs_name_the_field():
    """seq2seq and distillation turn epochs into steps with set_max_steps: 0 or -1 epochs is an error."""
    from scratchlm.stages.base import set_max_steps
    from scratchlm.train.config import TrainConfig

    for bad in (0, -1, 0.0):
        with pytest.raises(ValueError, match="epochs"):
            set_max_steps(TrainConfig(), bad, 100)


@pytest.mark.parametrize("flag", ["--minutes", "--sentiment-minutes"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_quickstart_budgets_are_checked_before_any_work(tmp_path, flag, value, capsys, monkeypatch):
    from scratchlm.stages import pretrain

    monkeypatch.setattr(pretrain, "run", lambda *a, **k: pytest.fail("work started"))
    assert main(["quickstart", "--out", str(tmp_path / "q"), flag, value]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


# ---- graceful stop --------------------------------------------------------------------------------------

def test_sigterm_in_process_saves_and_reports_signal(tmp_path, prepared):
    trainer = make_trainer(prepared, tmp_path, max_steps=50, eval_interval=0, save_interval=1000)
    task = trainer.task
    real = task.micro_batches

    def micro_batches(step, *a, **k):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(step, *a, **k)

    task.micro_batches = micro_batches
    res = trainer.fit()
    assert res.stopped_because == "signal" and res.step == 4 and res.stop_signal == signal.SIGTERM
    assert ckpt.resolve(tmp_path).name == "step_0000004" and (tmp_path / "model" / ckpt.MANIFEST).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after fit


def test_second_signal_exits_at_once(tmp_path, cli_env):
    """A run whose steps are slow: two SIGTERMs, and it is gone without waiting for the step."""
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_command(out, "train.max_steps=100000", "train.eval_interval=0",
                                        "train.save_interval=100000", "model.n_layer=8", "model.n_embd=128",
                                        "model.n_head=4", "model.block_size=256", "train.micro_batch_size=32"),
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        import time

        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "again: exiting now" in proc.stdout.read()


def test_bad_output_paths_are_refused_before_any_work(tmp_path, task_folders, capsys):
    model = str(task_folders["clf"])
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "good film"}\n')
    for output, needle in ((tmp_path, "is a folder"), (tmp_path / "nope" / "o.jsonl", "does not exist"),
                           (inp / "o.jsonl", "not a folder")):
        rc = main(["classify", "--model", model, "--input", str(inp), "--output", str(output)])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err, err
    assert json.loads(inp.read_text()) == {"text": "good film"}
    assert main(["classify", "--model", model, "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_no_traceback_for_any_bad_cli_input(tmp_path, cli_env, task_folders):
    """Every bad input above, through a real subprocess: one line on stderr, exit code non-zero."""
    model = str(task_folders["clf"])
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "good film", "id": 1}\n')
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    cases = [["classify", "--model", model, "--input", str(inp), "--output", str(inp)],
             ["classify", "--model", model, "--input", str(inp), "--output", str(tmp_path / "notes.txt")],
             ["classify", "--model", model, "--input", str(inp), "--output", str(tmp_path)],
             ["classify", "--model", model, "--input", str(inp), "--output", str(tmp_path / "no" / "o.csv")],
             ["pretrain", "--config", str(tmp_path / "loop.yaml")]]
    for argv in cases:
        p = subprocess.run([sys.executable, "-m", "scratchlm.cli", *argv], env=cli_env, capture_output=True,
                           text=True, cwd=REPO, timeout=120)
        assert p.returncode != 0 and "Traceback" not in p.stderr and p.stderr.strip(), (argv, p.stderr)
    assert json.loads(inp.read_text()) == {"text": "good film", "id": 1}


def test_a_signalled_stage_skips_its_report(monkeypatch, tmp_path):
    """Bug: after SIGTERM a stage still scored the model (a classifier's test pass, a pretraining run's final
    evaluation: minutes, past a scheduler's grace period). It now returns at once; the report waits for the
    resumed run."""
    from types import SimpleNamespace

    from scratchlm.stages import base as stage_base

    result = SimpleNamespace(train_seconds=1.0, step=4, best_step=None, stopped_because="signal",
                             model_dir="m", stop_signal=signal.SIGTERM)

    class FakeTrainer:
        def __init__(self, *a, **k):
            self.dist = SimpleNamespace(is_main=True)

        def fit(self):
            return result

    monkeypatch.setattr(stage_base, "Trainer", FakeTrainer)

    def report(info, trainer):
        raise AssertionError("the report must not run after a stop signal")

    info = stage_base.fit_and_report(SimpleNamespace(out_dir=str(tmp_path)), None, run_config={}, tokenizer=None,
                                     info={"name": "x"}, report=report)
    assert info["stop_signal"] == signal.SIGTERM and info["steps"] == 4
    # report.json says where it stopped (for scripts), without scores
    assert json.loads((tmp_path / "report.json").read_text())["stopped_because"] == "signal"


def test_time_based_checkpoints(tmp_path, prepared, monkeypatch):
    """train.save_interval_s saves at the first step boundary after that many seconds, whatever save_interval
    says: on a busy machine 50 steps took 75 minutes instead of 4 (the base run, 2026-12-07)."""
    import scratchlm.train.trainer as trainer_mod

    clock = iter(range(0, 10_000, 7))  # every call to the trainer's monotonic clock: 7 "seconds" later
    monkeypatch.setattr(trainer_mod.time, "monotonic", lambda: next(clock))
    trainer = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=0, save_interval=1000, keep_last=10,
                           save_interval_s=20)
    trainer.fit()
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert len(saved) >= 2 and saved[-1] == "step_0000006"  # at least one save before the last step's
    with pytest.raises(ValueError, match="train.save_interval_s"):
        make_trainer(prepared, tmp_path / "x", save_interval_s=0).cfg.validate()
