"""The training loop on real data (tinyshakespeare, tiny model): learning, accumulation, schedule, decay
groups, stopping rules, logs and checkpoint bookkeeping."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import lm_task, make_trainer, read_rows

from scratchlm.model import checkpoint as ckpt
from scratchlm.tasks.lm import LMTask
from scratchlm.train.config import TrainConfig
from scratchlm.train.optim import lr_at


class ScriptedEval(LMTask):
    """An LM task whose validation metric follows a script (one value per evaluation)."""

    def __init__(self, base: LMTask, values) -> None:
        self.__dict__.update(base.__dict__)
        self.values = iter(values)

    def evaluate(self, model, max_batches, batch_size=16):
        return {"val_loss": float(next(self.values))}


def test_loss_decreases_on_tinyshakespeare(tmp_path, prepared):
    res = make_trainer(prepared, tmp_path, max_steps=30, lr=1e-2, warmup_steps=3, micro_batch_size=8,
                       eval_interval=30, eval_at_start=True, eval_batches=4).fit()
    rows = read_rows(tmp_path)
    losses = [r["loss"] for r in rows]
    assert len(losses) == 30
    assert losses[0] == pytest.approx(math.log(prepared.tokenizer.vocab_size), abs=0.3)  # ~uniform at init
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)
    evals = read_rows(tmp_path, "eval")
    assert [e["step"] for e in evals] == [0, 30]
    assert evals[1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert res.stopped_because == "max_steps" and res.step == 30


def test_grad_accumulation_matches_a_larger_micro_batch(tmp_path, prepared):
    runs = {}
    for name, kw in {"accum": dict(micro_batch_size=4, global_batch_size=8),
                     "single": dict(micro_batch_size=8)}.items():
        task = lm_task(prepared)
        trainer = make_trainer(prepared, tmp_path / name, task=task, max_steps=3, eval_interval=0, **kw)
        trainer.fit()
        runs[name] = (trainer.grad_accum, [r["loss"] for r in read_rows(tmp_path / name)],
                      {k: v.clone() for k, v in task.model.state_dict().items()})
    (ga, la, wa), (gs, ls, ws) = runs["accum"], runs["single"]
    assert (ga, gs) == (2, 1)
    assert abs(la[0] - ls[0]) < 1e-5  # step 1: same weights, same 8 rows
    for a, b in zip(la, ls):
        assert abs(a - b) < 1e-4
    for k in wa:
        torch.testing.assert_close(wa[k], ws[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lr_schedule_values(schedule):
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, schedule=schedule)
    assert lr_at(0, cfg) == pytest.approx(0.1)  # warmup is linear from lr/warmup
    assert lr_at(4, cfg) == pytest.approx(0.5)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)  # decay starts at the peak
    mid, end = lr_at(60, cfg), lr_at(110, cfg)
    if schedule == "constant":
        assert mid == end == 1.0
    else:
        assert mid == pytest.approx(0.55)  # half-way: cosine and linear agree
        assert end == pytest.approx(0.1)  # ends at lr * min_lr_ratio
        assert lr_at(35, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)) if schedule == "cosine"
                                               else 1.0 - 0.9 * 0.25)
    steps = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b - 1e-12 for a, b in zip(steps, steps[1:]))  # monotone after warmup


def test_lr_decay_horizon_and_logged_lr(tmp_path, prepared):
    cfg = TrainConfig(lr=1.0, warmup_steps=0, max_steps=100, decay_steps=20, min_lr_ratio=0.2)
    assert lr_at(20, cfg) == pytest.approx(0.2) and lr_at(90, cfg) == pytest.approx(0.2)  # flat after horizon
    make_trainer(prepared, tmp_path, max_steps=6, lr=2e-3, warmup_steps=2, eval_interval=0).fit()
    cfg = TrainConfig(max_steps=6, lr=2e-3, warmup_steps=2)
    assert [r["lr"] for r in read_rows(tmp_path)] == pytest.approx([lr_at(s, cfg) for s in range(6)])


def test_no_weight_decay_on_norms_embeddings_or_biases(tmp_path, prepared):
    trainer = make_trainer(prepared, tmp_path, max_steps=1, eval_interval=0, weight_decay=0.1)
    trainer.fit()
    model = trainer.task.model
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: [names[id(p)] for p in g["params"]] for g in trainer.optimizer.param_groups}
    assert set(groups) == {0.1, 0.0}
    decayed, plain = groups[0.1], groups[0.0]
    assert "embed.weight" in plain and "norm.weight" in plain
    assert all("norm" not in n and "embed" not in n for n in decayed)
    assert all(n.endswith("_proj.weight") for n in decayed)
    assert len(decayed) == 7 * model.cfg.n_layer  # q, k, v, o, gate, up, down
    assert len(decayed) + len(plain) == len(list(model.parameters()))  # tied head appears once


def test_early_stopping(tmp_path, prepared):
    task = ScriptedEval(lm_task(prepared), [3.0, 3.0, 3.0, 3.0, 3.0])  # never improves after the first
    res = make_trainer(prepared, tmp_path, task=task, max_steps=50, eval_interval=2,
                       early_stopping_patience=2).fit()
    assert res.stopped_because == "early_stopping"
    assert res.step == 6 and res.best_step == 2 and res.best_metric == 3.0
    assert ckpt.read_pointer(tmp_path / "checkpoints", ckpt.LATEST) == "step_0000006"  # saved where it stopped


def test_wall_clock_budget_stops_cleanly(tmp_path, prepared):
    res = make_trainer(prepared, tmp_path, max_steps=100_000, max_time_s=0.3, eval_interval=0).fit()
    assert res.stopped_because == "max_time_s"
    assert 1 <= res.step < 100_000 and res.train_seconds >= 0.3
    latest = ckpt.resolve(tmp_path)
    assert latest.name == f"step_{res.step:07d}"  # the last step was saved
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["elapsed"] >= 0.3
    # resuming with the budget already spent stops right away: not a single extra step
    res2 = make_trainer(prepared, tmp_path, max_steps=100_000, max_time_s=0.3, eval_interval=0,
                        resume=True).fit()
    assert res2.stopped_because == "max_time_s" and res2.step == res.step


def test_metrics_tensorboard_and_best_pointer(tmp_path, prepared):
    res = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=2, save_interval=3, log_interval=2,
                       tensorboard=True).fit()
    train = read_rows(tmp_path)
    assert [r["step"] for r in train] == [2, 4, 6]
    for r in train:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
    assert train[-1]["tokens_seen"] == 6 * 4 * 32
    evals = read_rows(tmp_path, "eval")
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert {"val_loss", "val_ppl", "val_bpb"} <= evals[0].keys()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "eval/val_loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6]
    # BEST points at the evaluation with the lowest val_loss, and it is a complete checkpoint
    best_step = min(evals, key=lambda e: e["val_loss"])["step"]
    assert res.best_step == best_step
    best = ckpt.read_pointer(tmp_path / "checkpoints", ckpt.BEST)
    assert best == f"step_{best_step:07d}"
    ckpt.verify(tmp_path / "checkpoints" / best)
    assert json.loads((tmp_path / "model" / "source.json").read_text())["step"] == best_step


def test_keep_last_pruning_keeps_the_best(tmp_path, prepared):
    task = ScriptedEval(lm_task(prepared), [1.0, 2.0, 3.0, 4.0, 5.0])  # the first evaluation is the best
    res = make_trainer(prepared, tmp_path, task=task, max_steps=10, eval_interval=2, save_interval=2,
                       keep_last=1).fit()
    assert res.best_step == 2
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["step_0000002", "step_0000010"]
    assert ckpt.read_pointer(tmp_path / "checkpoints", ckpt.BEST) == "step_0000002"
    for name in folders:
        ckpt.verify(tmp_path / "checkpoints" / name)
    assert json.loads((tmp_path / "model" / "source.json").read_text())["step"] == 2  # exported the best


def test_time_fitted_decay_follows_steps_that_slow_down(tmp_path, prepared):
    """Regression: the horizon was fitted once from the first steps; when later steps were slower the
    budget ran out with the learning rate still at 11% of its peak (Tatoeba en->zh stopped at step 1,293
    of a fitted 1,445). Refitting from the mean step time keeps the decay ending at the budget."""
    t = make_trainer(prepared, tmp_path, max_steps=100_000, max_time_s=100.0, budget_calibration_steps=2)
    step_at_budget = None
    while t.elapsed < 100.0:
        t.step += 1
        dt = 1.0 if t.step <= 12 else 2.0  # steps get twice as slow after the calibration
        t.elapsed += dt
        t._fit_horizon(dt)
        if t.elapsed >= 100.0:
            step_at_budget = t.step
    assert step_at_budget == 56
    assert abs(t.horizon - step_at_budget) <= 1


@pytest.mark.parametrize("steps,batch,budget,expect", [
    (120, 32, None, True),    # an in-domain stage: few steps, big ones (~10 min eager): compiled
    (500, 16, None, True),    # many steps
    (30, 16, None, False),    # a quick run: compiling would cost more than it saves
    (120, 32, 60.0, False),   # a one-minute budget
])
def test_compile_auto_weighs_steps_times_batch(steps, batch, budget, expect, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from scratchlm.train.trainer import Trainer

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/cc")
    stub = SimpleNamespace(cfg=TrainConfig(compile="auto", max_steps=steps, max_time_s=budget),
                           device=torch.device("cpu"), global_batch_size=batch, _print=print)
    assert Trainer._should_compile(stub) is expect
