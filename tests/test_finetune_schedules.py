"""ULMFiT's fine-tuning schedules in the shared training core: discriminative learning rates per block and
gradual unfreezing (top-down), both as per-group learning rates, so they resume exactly like any schedule."""

from __future__ import annotations

import json

import pytest
import torch

from scratchlm.model.heads import SequenceClassifier
from scratchlm.model.transformer import ModelConfig
from scratchlm.train.config import TrainConfig
from scratchlm.train.optim import build_optimizer, group_lr, layer_depth

CFG = ModelConfig(vocab_size=64, block_size=16, n_layer=3, n_head=2, n_embd=16)


def test_layer_depth_counts_from_the_output():
    assert layer_depth("head.score.weight", 3) == 0
    assert layer_depth("backbone.norm.weight", 3) == 0
    assert layer_depth("backbone.layers.2.mlp.up_proj.weight", 3) == 1
    assert layer_depth("backbone.layers.0.attn.q_proj.lora_A", 3) == 3
    assert layer_depth("backbone.embed.weight", 3) == 4
    assert layer_depth("layers.1.attn_norm.weight", 3) == 2


def test_groups_carry_depth_and_scale():
    torch.manual_seed(0)
    clf = SequenceClassifier(CFG, 2)
    opt = build_optimizer(clf, TrainConfig(layer_lr_decay=0.5, weight_decay=0.1))
    depths = {(g["depth"], g["weight_decay"] > 0): g["lr_scale"] for g in opt.param_groups}
    assert depths[(0, True)] == 1.0 and depths[(3, True)] == 0.125 and depths[(4, False)] == 0.0625
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in clf.parameters() if p.requires_grad)  # every parameter, once
    plain = build_optimizer(clf, TrainConfig(weight_decay=0.1))
    assert len(plain.param_groups) == 2 and "depth" not in plain.param_groups[0]


def test_gradual_unfreezing_starts_top_down():
    cfg = TrainConfig(unfreeze_steps=10, layer_lr_decay=0.5)
    head, block1, emb = {"depth": 0, "lr_scale": 1.0}, {"depth": 1, "lr_scale": 0.5}, {"depth": 4, "lr_scale": 0.0625}
    assert group_lr(1.0, head, 0, cfg) == 1.0
    assert group_lr(1.0, block1, 9, cfg) == 0.0 and group_lr(1.0, block1, 10, cfg) == 0.5
    assert group_lr(1.0, emb, 39, cfg) == 0.0 and group_lr(1.0, emb, 40, cfg) == 0.0625


def test_frozen_groups_do_not_move_in_a_real_step():
    torch.manual_seed(0)
    clf = SequenceClassifier(CFG, 2)
    cfg = TrainConfig(unfreeze_steps=5, lr=1e-2, weight_decay=0.1)
    opt = build_optimizer(clf, cfg)
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    for g in opt.param_groups:
        g["lr"] = group_lr(cfg.lr, g, 5, cfg)  # step 5: the head and the top block train, the rest waits
    loss = clf(torch.randint(0, 64, (4, 8))).logsumexp(-1).sum()
    loss.backward()
    opt.step()
    moved = {n for n, p in clf.named_parameters() if not torch.equal(p, before[n])}
    assert "head.score.weight" in moved and "backbone.layers.2.mlp.down_proj.weight" in moved
    assert not any(n.startswith(("backbone.layers.0.", "backbone.layers.1.", "backbone.embed")) for n in moved)


@pytest.mark.parametrize("field,value", [("layer_lr_decay", 0.0), ("layer_lr_decay", 1.5), ("unfreeze_steps", -1)])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"train.{field}"):
        TrainConfig(**{field: value}).validate()


def _mean_of(folders):
    from scratchlm.model import checkpoint as ckpt

    tensors = [ckpt.load_tensors(f) for f in folders]
    return {k: sum(t[k].double() for t in tensors) / len(tensors) for k in tensors[0]}


def test_checkpoint_averaging_exports_the_mean_when_it_scores_better(tmp_path, prepared):
    from conftest import make_trainer

    from scratchlm.model import checkpoint as ckpt

    trainer = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=2, save_interval=2, keep_last=3,
                           average_last=3)
    real, calls = trainer.task.evaluate, iter(range(100))

    def evaluate(model, max_batches, **kw):  # every evaluation "improves": the average, evaluated last, wins
        return {**real(model, max_batches, **kw), "val_loss": 10.0 - next(calls)}

    trainer.task.evaluate = evaluate
    trainer.fit()
    source = json.loads((tmp_path / "model" / "source.json").read_text())
    assert source["steps"] == [2, 4, 6] and source["val_loss"] < source["best_single"]["val_loss"]
    mean = _mean_of([tmp_path / "checkpoints" / f"step_{s:07d}" for s in (2, 4, 6)])
    exported = ckpt.load_tensors(tmp_path / "model")
    for k, v in mean.items():
        torch.testing.assert_close(exported[k].double(), v, atol=1e-6, rtol=1e-6)


def test_checkpoint_averaging_keeps_the_best_checkpoint_when_the_mean_is_worse(tmp_path, prepared):
    from conftest import make_trainer

    trainer = make_trainer(prepared, tmp_path, max_steps=6, eval_interval=2, save_interval=2, keep_last=3,
                           average_last=3)
    real, calls = trainer.task.evaluate, iter(range(100))

    def evaluate(model, max_batches, **kw):  # the first evaluation is the best; the average is worse
        return {**real(model, max_batches, **kw), "val_loss": 1.0 + next(calls)}

    trainer.task.evaluate = evaluate
    trainer.fit()
    source = json.loads((tmp_path / "model" / "source.json").read_text())
    assert source == {"checkpoint": str(tmp_path / "checkpoints" / "step_0000002"), "step": 2}


def test_average_last_needs_the_checkpoints_on_disk():
    with pytest.raises(ValueError, match="train.keep_last >= 4"):
        TrainConfig(average_last=4, keep_last=2).validate()
    with pytest.raises(ValueError, match="train.average_last"):
        TrainConfig(average_last=1).validate()
