"""Budgets that mean nothing are errors naming the field: zero, negative, NaN or infinite steps, seconds,
epochs or minutes would train nothing and still save a random-weight "model"."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm.config import from_dict
from scratchlm.train.config import TrainConfig, check_budget, check_epochs


@pytest.mark.parametrize("field, value, message", [
    ("max_time_s", 0, "train.max_time_s must be positive, got 0"),
    ("max_time_s", -5, "train.max_time_s must be positive, got -5"),
    ("max_time_s", 0.0, "train.max_time_s must be positive, got 0.0"),
    ("max_time_s", math.nan, "train.max_time_s must be positive, got nan"),
    ("max_time_s", math.inf, "train.max_time_s must be finite"),
    ("max_steps", 0, "train.max_steps must be positive, got 0"),
    ("max_steps", -1, "train.max_steps must be positive, got -1"),
    ("max_steps", 2.5, "train.max_steps must be a positive integer, got 2.5"),
    ("decay_steps", 0, "train.decay_steps must be positive, got 0"),
])
def test_train_budget_must_be_positive(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig(**{field: value}).validate()
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("value", ["0", "-5", "-0.5"])
def test_recipe_and_override_values_are_checked_when_the_config_is_built(value: str) -> None:
    with pytest.raises(ValueError, match="train.max_time_s must be positive"):
        from_dict(TrainConfig, {"max_time_s": value})


def test_real_budgets_pass() -> None:
    TrainConfig(max_time_s=0.3).validate()
    TrainConfig(max_time_s=None, max_steps=1).validate()
    TrainConfig(max_time_s=1200, decay_steps=10).validate()
    assert from_dict(TrainConfig, {"max_time_s": "60"}).max_time_s == 60


@pytest.mark.parametrize("epochs", [0, -1, -0.5, math.nan])
def test_epochs_must_be_positive(epochs: float) -> None:
    with pytest.raises(ValueError, match="epochs must be positive"):
        check_epochs(epochs)
    with pytest.raises(ValueError, match="--minutes must be positive"):
        check_budget("--minutes", epochs)


def test_epochs_none_or_positive_pass() -> None:
    check_epochs(None)
    check_epochs(0.5)
    check_budget("--minutes", 4.0)


@pytest.mark.parametrize("args, field", [
    (["pretrain", "--config", "shakespeare", "--train.max_time_s", "0"], "train.max_time_s"),
    (["pretrain", "--config", "shakespeare", "--train.max_time_s", "-5"], "train.max_time_s"),
    (["quickstart", "--minutes", "-1"], "--minutes"),
], ids=["pretrain-0s", "pretrain-negative", "quickstart-negative-minutes"])
def test_cli_refuses_a_meaningless_budget_without_a_traceback_or_a_model(tmp_path: Path, args: list[str],
                                                                          field: str) -> None:
    out = tmp_path / "run"
    where = ["--out", str(out)] if args[0] == "quickstart" else ["--train.out_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCRATCHLM_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "scratchlm", *args, *where], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode != 0
    assert f"{field} must be positive" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list(out.rglob("*.safetensors")) and not list(out.rglob("config.json"))  # no "model" saved


def test_an_explicit_max_steps_caps_an_epoch_budget():
    """Bug: ``epochs`` overwrote ``train.max_steps``, so ``train.max_steps=120`` ran (and its bar counted to) a
    whole epoch of 702 steps. Whichever budget ends first now stops the run."""
    from scratchlm.stages.base import set_max_steps
    from scratchlm.train.config import TrainConfig

    cfg = TrainConfig(max_steps=120)
    set_max_steps(cfg, 1.0, 702)
    assert cfg.max_steps == 120
    cfg = TrainConfig(max_steps=100000)
    set_max_steps(cfg, 0.5, 702)
    assert cfg.max_steps == 351
