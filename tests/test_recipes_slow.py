"""The SMS spam recipe end to end, from nothing: pretrain (en_small), fine-tune, baseline, report (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, requires_data, subprocess_env


@pytest.mark.slow
@requires_data
def test_sms_spam_recipe_end_to_end(tmp_path):
    env = subprocess_env(tmp_path / "cache")
    env.pop("OMP_NUM_THREADS")  # a long run: use every core
    cli = [sys.executable, "-m", "scratchlm.cli"]

    def scratchlm(*args):
        p = subprocess.run(cli + list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
        assert p.returncode == 0, f"{args}: {p.stdout[-2000:]}\n{p.stderr[-4000:]}"
        return p

    scratchlm("finetune", "classify", "--config", "sms_spam", "--train.progress", "false")
    scratchlm("baseline", "bow", "--config", "sms_spam")
    scratchlm("report", "runs/sms_spam")
    report = json.loads((tmp_path / "runs/sms_spam/decoder-full/report.json").read_text())
    test = report["test"]
    assert test["accuracy"] >= 0.98, test
    assert test["report"]["spam"]["f1-score"] >= 0.93, test["report"]["spam"]
    assert (tmp_path / "runs/sms_spam/report.html").exists()
    assert REPO.exists()
