"""`scratchlm export --format hf`: transformers loads the folder and computes what our model computes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install scratchlm[export])")

from conftest import tiny_model_config  # noqa: E402

from scratchlm.config import to_dict  # noqa: E402
from scratchlm.export import ExportError, export, load_source  # noqa: E402
from scratchlm.export.hf import export_hf  # noqa: E402
from scratchlm.infer.generate import SamplingConfig, generate  # noqa: E402
from scratchlm.model import checkpoint as ckpt  # noqa: E402
from scratchlm.model.heads import SequenceClassifier  # noqa: E402
from scratchlm.model.lora import LoraConfig, inject_lora, lora_modules, merge_lora, save_adapter  # noqa: E402
from scratchlm.model.transformer import Transformer  # noqa: E402
from scratchlm.tasks.classify import collate, encode_texts  # noqa: E402

TEXTS = ["a wonderful, moving film", "the plot was dull and the actors were awful, quite boring really"]


def save_classifier(folder, tokenizer, *, pooling="mean", bias=False, seed=0):
    """A tiny seeded decoder classifier saved as `finetune classify` saves one."""
    torch.manual_seed(seed)
    clf = SequenceClassifier(Transformer(tiny_model_config(tokenizer.vocab_size, block_size=64)), 2,
                             pooling=pooling, pad_id=tokenizer.pad_id, label_names=["neg", "pos"], bias=bias)
    config = {"task": "classify", "kind": "decoder", "tokenizer_fingerprint": tokenizer.fingerprint,
              "model": to_dict(clf.backbone.cfg), "classifier": clf.config_dict(), "label_names": ["neg", "pos"],
              "label_values": [0, 1], "max_length": 64, "head_fraction": 0.25, "clean": {}}
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(clf), config=config, tokenizer=tokenizer)
    return folder


def randomize_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.05)


def test_lm_logits_tokenizer_and_greedy_generate(tiny_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = load_source(tiny_lm_dir)
    info = export_hf(src, tmp_path / "hf")
    assert info["architecture"] == "LlamaForCausalLM"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "First Citizen: Before we proceed any further, hear me speak."
    ids = src.tokenizer.encode(text)
    assert tok(text)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        ours, theirs = src.model.logits(x), hf(x).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    new = 24
    want = generate(src.model, [ids[:8]], SamplingConfig(max_new_tokens=new, temperature=0),
                    eos_id=src.tokenizer.eos_id)[0]
    got = hf.generate(torch.tensor([ids[:8]]), max_new_tokens=new, do_sample=False)[0, 8:].tolist()
    got = got[:got.index(src.tokenizer.eos_id)] if src.tokenizer.eos_id in got else got
    assert len(want) > 0 and got == want


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_logits_with_padding(prepared, tmp_path, pooling):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_classifier(tmp_path / "clf", prepared.tokenizer, pooling=pooling)
    info = export(folder, "hf", tmp_path / "hf")
    remote = pooling == "mean"
    assert ("trust_remote_code=True" in info["load"]) == remote
    assert (tmp_path / "hf" / "modeling_scratchlm.py").exists() == remote
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", trust_remote_code=remote).eval()
    if not remote:
        assert type(hf).__name__ == "LlamaForSequenceClassification"
    assert hf.config.id2label == {0: "neg", 1: "pos"}
    src = load_source(folder)
    rows, _ = encode_texts(src.tokenizer, TEXTS, 64)
    idx, mask = collate(rows, src.tokenizer.pad_id)
    assert (mask == 0).any()  # the short text is padded
    enc = AutoTokenizer.from_pretrained(tmp_path / "hf")(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], idx) and torch.equal(enc["attention_mask"], mask)
    with torch.no_grad():
        ours = src.model(idx, mask)
        theirs = hf(input_ids=idx, attention_mask=mask).logits
    assert (ours - theirs).abs().max().item() < 1e-4


def test_classifier_lora_peft_layout_and_merged(prepared, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is not installed")
    from transformers import AutoModelForSequenceClassification

    folder = save_classifier(tmp_path / "clf", prepared.tokenizer, pooling="last")
    src = load_source(folder)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS")
    inject_lora(src.model, cfg)
    randomize_lora(src.model)
    save_adapter(src.model, cfg, tmp_path / "adapter")
    rows, _ = encode_texts(src.tokenizer, TEXTS, 64)
    idx, mask = collate(rows, src.tokenizer.pad_id)
    with torch.no_grad():
        want = src.model(idx, mask)

    info = export(folder, "hf", tmp_path / "hf-peft", adapter=tmp_path / "adapter", lora="peft")
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf-peft").eval()
    with torch.no_grad():
        base_logits = base(input_ids=idx, attention_mask=mask).logits
    assert (base_logits - want).abs().max().item() > 1e-3  # the adapter matters
    model = peft.PeftModel.from_pretrained(base, info["adapter"]).eval()
    with torch.no_grad():
        got = model(input_ids=idx, attention_mask=mask).logits
    assert (got - want).abs().max().item() < 1e-4

    # a folder saved merged by `finetune --method lora` (adapter beside it): --lora peft takes it back out
    merge_lora(src.model)
    config = {**ckpt.read_config(folder), "lora": {"merged": True, "adapter": str(tmp_path / "adapter")}}
    saved = ckpt.save_checkpoint(tmp_path / "merged-run" / "model", model_tensors=ckpt.model_state(src.model),
                                 config=config, tokenizer=src.tokenizer)
    info = export(saved, "hf", tmp_path / "hf-unmerged", lora="peft")
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf-unmerged").eval()
    model = peft.PeftModel.from_pretrained(base, info["adapter"]).eval()
    with torch.no_grad():
        got = model(input_ids=idx, attention_mask=mask).logits
    assert (got - want).abs().max().item() < 1e-4

    export(folder, "hf", tmp_path / "hf-merged", adapter=tmp_path / "adapter", lora="merge")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf-merged").eval()
    assert not (tmp_path / "hf-merged" / "adapter").exists()
    with torch.no_grad():
        got = merged(input_ids=idx, attention_mask=mask).logits
    assert (got - want).abs().max().item() < 1e-4


def test_refuses_what_hf_llama_cannot_express(prepared, tmp_path):
    folder = save_classifier(tmp_path / "clf", prepared.tokenizer, bias=True)
    with pytest.raises(ExportError, match="classifier.bias"):
        export(folder, "hf", tmp_path / "hf")
    with pytest.raises(ExportError, match="--int8 is for --format onnx"):
        export(folder, "hf", tmp_path / "hf", int8=True)


def test_export_cli_prints_how_to_load(tiny_lm_dir, tmp_path, capsys):
    import argparse

    from scratchlm.cli.export import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["export", "--model", str(tiny_lm_dir), "--format", "hf", "--out", str(tmp_path / "o")])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert "AutoModelForCausalLM.from_pretrained" in out and (tmp_path / "o" / "model.safetensors").exists()
