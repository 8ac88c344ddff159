"""Precision choice and the bf16 autocast path (weights and optimizer state stay fp32)."""

import math

import torch
from conftest import make_trainer, read_rows, requires_data

import scratchlm.train.hardware as hw
from scratchlm.model import checkpoint as ckpt


def test_auto_picks_bf16_only_where_the_cpu_runs_it_fast(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: False)
    assert hw.pick_dtype("auto", cpu) == torch.float32
    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: True)
    assert hw.pick_dtype("auto", cpu) == torch.bfloat16
    assert hw.pick_dtype("fp32", cpu) == torch.float32 and hw.pick_dtype("bf16", cpu) == torch.bfloat16


@requires_data
def test_bf16_autocast_trains_with_fp32_master_weights(tmp_path, prepared):
    trainer = make_trainer(prepared, tmp_path, precision="bf16", max_steps=6, eval_interval=3)
    res = trainer.fit()
    assert trainer.dtype == torch.bfloat16
    losses = [r["loss"] for r in read_rows(tmp_path)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.task.model.parameters())
    tensors = ckpt.load_tensors(res.model_dir)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    opt = ckpt.load_optimizer_state(ckpt.resolve(tmp_path))
    assert all(v.dtype == torch.float32 for st in opt["state"].values() for k, v in st.items() if k != "step")
    assert "val_bpb" in res.last_eval
