"""Exact resumption: a run SIGKILLed at any moment and resumed ends bit-identical to one that never stopped."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_command, run_cli
from safetensors.torch import load_file

from scratchlm.model import checkpoint as ckpt
from scratchlm.train.hardware import measure_matmul_peak

# dropout > 0 so the RNG state matters; accumulation 2; a save every 3 steps and an evaluation every 4
# (evaluations that improve also save, so saves at 3, 4, 6, 8, 9, 12).
N = 12
RUN = ["model.dropout=0.1", "train.global_batch_size=8", f"train.max_steps={N}", "train.save_interval=3",
       "train.eval_interval=4", "train.keep_last=3", "train.seed=4321"]


def final_state(out_dir: Path) -> dict:
    folder = ckpt.resolve(out_dir / "checkpoints")
    assert folder.name == f"step_{N:07d}", folder
    ckpt.verify(folder)
    state = json.loads((folder / "trainer_state.json").read_text())
    return {"model": load_file(str(folder / "model.safetensors")),
            "optimizer": load_file(str(folder / "optimizer.safetensors")),
            "optimizer_meta": json.loads((folder / "optimizer.json").read_text()),
            "state": state}


def assert_identical(a: dict, b: dict) -> None:
    for part in ("model", "optimizer"):
        assert a[part].keys() == b[part].keys(), part
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part} tensor {k} differs after resume"
    assert a["optimizer_meta"] == b["optimizer_meta"]
    for key in ("step", "tokens_seen", "best_metric", "best_step", "last_eval", "rng"):
        assert a["state"][key] == b["state"][key], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cli_env):
    out = tmp_path_factory.mktemp("reference") / "run"
    run_cli(out, *RUN, env=cli_env)
    return final_state(out)


def _tmp_save_dirs(ckpt_dir: Path) -> list[Path]:
    return list(ckpt_dir.glob(".step_*.tmp-*")) if ckpt_dir.exists() else []


def kill_run(out: Path, env: dict, mid_save: bool, delay: float = 0.0) -> dict:
    """Start the run and SIGKILL it once a checkpoint exists: right in the middle of a later save
    (``mid_save``: the process is frozen with SIGSTOP while a half-written checkpoint folder exists, so
    the kill provably lands mid-save) or ``delay`` seconds after the first checkpoint appears."""
    ckpt_dir = out / "checkpoints"
    log = open(out.parent / "killed.log", "w")
    proc = subprocess.Popen(cli_command(out, *RUN), env=env, stdout=log, stderr=subprocess.STDOUT)
    info = {"killed": False, "mid_save": False}
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (ckpt_dir / ckpt.LATEST).exists():
                if not mid_save:
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    info["killed"] = True
                    break
                if _tmp_save_dirs(ckpt_dir):
                    proc.send_signal(signal.SIGSTOP)  # frozen: the filesystem state is what a kill leaves
                    if _tmp_save_dirs(ckpt_dir):
                        proc.send_signal(signal.SIGKILL)
                        info.update(killed=True, mid_save=True)
                        break
                    proc.send_signal(signal.SIGCONT)  # the save finished in between: wait for the next one
            time.sleep(0.0005)
    finally:
        if proc.poll() is None and not info["killed"]:
            proc.kill()
        proc.wait(timeout=30)
        log.close()
    info["returncode"] = proc.returncode
    info["latest"] = ckpt.read_pointer(ckpt_dir, ckpt.LATEST)
    return info


@pytest.mark.parametrize("mid_save", [True, False], ids=["kill-mid-save", "kill-random-delay"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, cli_env, reference, mid_save):
    out = tmp_path / "run"
    info = None
    for attempt in range(3):  # the run is short: retry if it finished before the kill could land
        shutil.rmtree(out, ignore_errors=True)
        info = kill_run(out, cli_env, mid_save, delay=random.Random(attempt).uniform(0.0, 0.15))
        if info["killed"] and info["returncode"] == -signal.SIGKILL and info["latest"] != f"step_{N:07d}":
            break
    assert info["killed"] and info["returncode"] == -signal.SIGKILL, f"could not kill the run mid-way: {info}"
    assert info["latest"] is not None and info["latest"] != f"step_{N:07d}", info
    if mid_save:
        assert info["mid_save"]
    # whatever the kill left, LATEST names a complete, verified checkpoint
    ckpt.verify(ckpt.resolve(out / "checkpoints"))

    proc = run_cli(out, *RUN, "train.resume=true", env=cli_env)
    assert "resumed from" in proc.stdout + proc.stderr, "the second run did not resume"
    assert_identical(final_state(out), reference)
    assert not _tmp_save_dirs(out / "checkpoints"), "leftovers of the killed save were not cleaned up"


def test_matmul_peak_measurement_leaves_global_rng_alone():
    """The MFU peak is measured after a resume restored the RNG: it must not draw from the global stream."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    peak = measure_matmul_peak(torch.device("cpu"), torch.float32, n=64, seconds=0.01, use_cache=False)
    assert peak > 0
    assert torch.equal(torch.rand(4), expected)


def _save(folder: Path, value: float) -> None:
    ckpt.save_checkpoint(folder, model_tensors={"w": torch.full((3,), value)}, config={"v": value})


def test_resolve_follows_latest_to_old_sibling(tmp_path):
    """Re-saving a step moves the complete folder to ``<name>.old`` before the new one is renamed into
    place; a kill between the two renames must leave the checkpoint LATEST names loadable."""
    ck = tmp_path / "checkpoints"
    _save(ck / "step_0000003", 3.0)
    _save(ck / "step_0000006", 6.0)
    ckpt.set_pointer(ck, ckpt.LATEST, "step_0000006")
    os.replace(ck / "step_0000006", ck / "step_0000006.old")  # the state between the two renames
    folder = ckpt.resolve(tmp_path)
    assert folder.name == "step_0000006.old"
    assert ckpt.load_tensors(folder)["w"][0].item() == 6.0


def test_resume_without_checkpoint_starts_fresh_and_resume_refuses_other_model(tmp_path, prepared):
    from conftest import make_trainer

    res = make_trainer(prepared, tmp_path, max_steps=2, resume=True, eval_interval=0).fit()
    assert res.step == 2
    trainer = make_trainer(prepared, tmp_path, max_steps=4, resume=True, eval_interval=0,
                           model_kw={"n_layer": 1})
    with pytest.raises(ckpt.CheckpointError, match="n_layer"):
        trainer.fit()


def test_sigterm_then_resume_is_bit_identical(tmp_path, cli_env, reference):
    """A sitting ends: SIGTERM stops the run at the next step boundary with a checkpoint and a report (exit
    143, stopped_because "signal"); --resume ends bit-identical to the run that never stopped."""
    out = tmp_path / "run"
    for attempt in range(3):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        log = open(tmp_path / "sigterm.log", "w")
        proc = subprocess.Popen(cli_command(out, *RUN), env=cli_env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "checkpoints" / ckpt.LATEST).exists():
                time.sleep(random.Random(attempt).uniform(0.0, 0.1))
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.0005)
        proc.wait(timeout=120)
        log.close()
        report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
        if report.get("stopped_because") == "signal":
            break
    text = (tmp_path / "sigterm.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
    assert report["stopped_because"] == "signal" and report["steps"] < N, report
    stopped_at = ckpt.resolve(out / "checkpoints")
    assert stopped_at.name == f"step_{report['steps']:07d}"
    ckpt.verify(stopped_at)
    assert "Traceback" not in text
    proc = run_cli(out, *RUN, "train.resume=true", env=cli_env)
    assert "resumed from" in proc.stdout + proc.stderr
    assert_identical(final_state(out), reference)


def test_resume_accepts_a_checkpoint_saved_before_a_model_field_existed():
    """Bug: adding ``copy_dim`` (default 0) to the model config made every older checkpoint, whose config
    lacks it, refuse to resume ("copy_dim: None != 0"). Fields at their defaults no longer count."""
    from scratchlm.train.trainer import without_defaults

    old = {"n_layer": 6, "n_embd": 256, "dropout": 0.0}
    new = {**old, "copy_dim": 0}
    assert without_defaults(old) == without_defaults(new)
    assert without_defaults(old) != without_defaults({**old, "copy_dim": 64})
    assert without_defaults({**old, "n_layer": 7}) != without_defaults(new)
