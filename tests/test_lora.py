"""LoRA: identity at init, only adapters train, merge == unmerged, PEFT-style adapter files round-trip."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from scratchlm.model.heads import SequenceClassifier
from scratchlm.model.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    LoraConfig,
    LoraLinear,
    count_trainable_parameters,
    inject_lora,
    load_adapter,
    lora_modules,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_all,
    merge_lora,
    save_adapter,
    trainable_summary,
    unmerge_all,
)
from scratchlm.model.transformer import ModelConfig, Transformer
from scratchlm.train.optim import param_groups

VOCAB = 97
ALL_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"vocab_size": VOCAB, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw})
    return Transformer(cfg).eval()


def batch(seed: int = 1, B: int = 3, T: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def train_steps(model: nn.Module, n: int = 4, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=lr)
    model.train()
    for step in range(n):
        idx = batch(100 + step, T=17)
        loss = model.loss(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    return model.logits(idx)


def test_config_validate():
    LoraConfig().validate()
    LoraConfig(target_modules="all-linear", task_type="SEQ_CLS").validate()
    for bad in (dict(r=0), dict(lora_alpha=0), dict(lora_dropout=1.0), dict(task_type="TOKEN_CLS"),
                dict(target_modules=[]), dict(target_modules="q_proj"), dict(modules_to_save="score"),
                dict(target_modules=["q_proj"], modules_to_save=["q_proj"])):
        with pytest.raises(ValueError):
            LoraConfig(**bad).validate()
    assert LoraConfig(task_type="SEQ_CLS").effective_modules_to_save() == ["classifier", "score"]


def test_lora_output_equals_base_at_init():
    model = tiny()
    idx = batch()
    before = logits(model, idx)
    paths = inject_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert len(paths) == 2 * len(ALL_PROJ)
    after = logits(model, idx)
    assert torch.equal(before, after)
    m = model.layers[0].attn.q_proj
    assert isinstance(m, LoraLinear) and m.scaling == 2.0
    assert m.lora_A.weight.shape == (4, 32) and m.lora_B.weight.shape == (32, 4)
    assert torch.count_nonzero(m.lora_B.weight) == 0 and torch.count_nonzero(m.lora_A.weight) > 0
    bound = 1 / 32 ** 0.5  # kaiming_uniform_(a=sqrt(5)) on fan_in 32, as nn.Linear / PEFT
    assert m.lora_A.weight.abs().max() <= bound


def test_only_lora_parameters_change_in_training():
    model = tiny()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, LoraConfig(r=4, lora_alpha=8))
    lora_before = {k: v.clone() for k, v in lora_state_dict(model).items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"layers.{i}.attn.{p}.lora_{ab}.weight" for i in range(2) for p in ("q_proj", "v_proj")
                         for ab in "AB"}
    train_steps(model)
    after = model.state_dict()
    for k, v in base.items():  # the base weights live on under <path>.base_layer.weight
        key = k.replace("q_proj.", "q_proj.base_layer.").replace("v_proj.", "v_proj.base_layer.")
        assert torch.equal(after[key], v), k
    for k, v in lora_state_dict(model).items():
        assert not torch.equal(v, lora_before[k]), k


def test_count_trainable_parameters():
    model = tiny()
    _, total = count_trainable_parameters(model)
    assert total == model.num_params()
    inject_lora(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    trainable, total2 = count_trainable_parameters(model)
    mlp_hidden = model.cfg.mlp_hidden
    assert trainable == 2 * (4 * (32 + 32) + 4 * (mlp_hidden + 32))
    assert total2 == total + trainable
    assert "trainable params:" in trainable_summary(model)


def test_merge_and_merge_lora_match_unmerged_logits():
    model = tiny()
    inject_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    train_steps(model)
    idx = batch(7)
    unmerged = logits(model, idx)
    base_q = model.layers[0].attn.q_proj.base_layer.weight.clone()

    merge_all(model)
    assert all(m.merged for m in lora_modules(model).values())
    assert not torch.equal(model.layers[0].attn.q_proj.base_layer.weight, base_q)
    torch.testing.assert_close(logits(model, idx), unmerged, atol=1e-5, rtol=0)
    merge_all(model)  # idempotent
    torch.testing.assert_close(logits(model, idx), unmerged, atol=1e-5, rtol=0)
    unmerge_all(model)
    assert not any(m.merged for m in lora_modules(model).values())
    torch.testing.assert_close(model.layers[0].attn.q_proj.base_layer.weight, base_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(model, idx), unmerged, atol=1e-5, rtol=0)

    merge_lora(model)
    assert not lora_modules(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith(ALL_PROJ))
    torch.testing.assert_close(logits(model, idx), unmerged, atol=1e-5, rtol=0)
    # the merged model has the plain Transformer's keys: it loads into a fresh one
    fresh = tiny(seed=5)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(logits(fresh, idx), unmerged, atol=1e-5, rtol=0)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.endswith(ALL_PROJ))


def test_adapter_roundtrip_gives_identical_logits(tmp_path):
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])
    model = tiny()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, cfg)
    train_steps(model)
    idx = batch(9)
    want = logits(model, idx)
    save_adapter(model, cfg, tmp_path / "adapter", base_model_name_or_path="runs/base")

    other = tiny(seed=3)
    other.load_state_dict(base_state)
    loaded = load_adapter(other, tmp_path / "adapter")
    assert loaded == cfg
    assert not any(m.training for m in lora_modules(other).values())  # injected into eval(): dropout off
    assert torch.equal(logits(other, idx), want)
    assert {n for n, p in other.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad}
    # loading into the model that already has the same LoRA layers reuses them
    with torch.no_grad():
        for m in lora_modules(other).values():
            m.lora_B.weight.zero_()
    load_adapter(other, tmp_path / "adapter")
    assert torch.equal(logits(other, idx), want)


def test_adapter_files_have_peft_layout(tmp_path):
    model = tiny()
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear")
    inject_lora(model, cfg)
    save_adapter(model, cfg, tmp_path, base_model_name_or_path="runs/base")
    conf = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert conf["peft_type"] == "LORA" and conf["task_type"] == "CAUSAL_LM"
    assert (conf["r"], conf["lora_alpha"], conf["lora_dropout"], conf["bias"]) == (4, 16, 0.0, "none")
    assert sorted(conf["target_modules"]) == sorted(ALL_PROJ)  # "all-linear" is written resolved, as PEFT
    assert conf["modules_to_save"] is None and conf["base_model_name_or_path"] == "runs/base"
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / ADAPTER_WEIGHTS)))
    assert "base_model.model.layers.0.attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    assert len(keys) == 2 * 2 * len(ALL_PROJ)


def test_all_linear_excludes_lm_head():
    model = tiny(tie_embeddings=False)
    paths = inject_lora(model, LoraConfig(target_modules="all-linear"))
    assert "lm_head" not in paths and type(model.lm_head) is nn.Linear
    assert sorted({p.rsplit(".", 1)[-1] for p in paths}) == sorted(ALL_PROJ)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        inject_lora(tiny(), LoraConfig(target_modules=["nope"]))
    with pytest.raises(ValueError, match="tied"):
        inject_lora(tiny(), LoraConfig(target_modules=["lm_head"]))
    model = tiny()
    inject_lora(model, LoraConfig())
    with pytest.raises(ValueError, match="already has 4 LoRA layers"):
        inject_lora(model, LoraConfig())

    cfg = LoraConfig(r=4, target_modules=["q_proj"])
    src = tiny()
    inject_lora(src, cfg)
    save_adapter(src, cfg, tmp_path / "a")
    with pytest.raises(AdapterError, match="wrong shape"):  # same names, wider model
        load_adapter(tiny(n_embd=64), tmp_path / "a")
    with pytest.raises(AdapterError, match="missing"):  # the model has more layers than the adapter
        load_adapter(tiny(n_layer=3), tmp_path / "a")
    other = tiny()
    inject_lora(other, LoraConfig(r=4, target_modules=["k_proj"]))
    with pytest.raises(AdapterError, match="not the adapter's"):
        load_adapter(other, tmp_path / "a")
    conf = json.loads((tmp_path / "a" / ADAPTER_CONFIG).read_text())
    (tmp_path / "a" / ADAPTER_CONFIG).write_text(json.dumps({**conf, "use_dora": True}))
    with pytest.raises(AdapterError, match="use_dora"):
        load_adapter(tiny(), tmp_path / "a")
    with pytest.raises(AdapterError, match="not found"):
        load_adapter(tiny(), tmp_path / "missing")


def test_seq_cls_adapter_saves_the_score_head(tmp_path):
    torch.manual_seed(0)
    clf = SequenceClassifier(ModelConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32), 3)
    cfg = LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS")
    paths = inject_lora(clf, cfg)
    assert "head.score" not in paths
    assert {n for n, p in clf.named_parameters() if p.requires_grad and "lora_" not in n} == {"head.score.weight"}
    idx = batch(3)
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(clf(idx), torch.tensor([0, 1, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        want = clf(idx)
    save_adapter(clf, cfg, tmp_path)
    conf = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert conf["task_type"] == "SEQ_CLS" and conf["modules_to_save"] == ["classifier", "score"]
    torch.manual_seed(0)
    fresh = SequenceClassifier(ModelConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32), 3)
    load_adapter(fresh, tmp_path)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(idx), want)


def test_mark_only_lora_trainable_extra():
    model = tiny()
    inject_lora(model, LoraConfig(), freeze=False)
    assert all(p.requires_grad for n, p in model.named_parameters() if "base_layer" not in n)
    mark_only_lora_trainable(model, extra_trainable=["norm"])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "norm.weight" in names and "layers.0.attn_norm.weight" not in names
    assert all("lora_" in n or n == "norm.weight" for n in names)
