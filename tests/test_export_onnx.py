"""`scratchlm export --format onnx`: ONNX Runtime computes our logits, decodes with the KV cache like our
generate, and runs the int8 variant; unmerged LoRA is refused unless merged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install scratchlm[export])")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (torch.onnx's exporter needs it)")

from test_export_hf import TEXTS, randomize_lora, save_classifier  # noqa: E402

from scratchlm.export import ExportError, export, load_source  # noqa: E402
from scratchlm.export.onnx import OnnxCausalLM, OnnxClassifier, export_onnx  # noqa: E402
from scratchlm.infer.generate import SamplingConfig, generate  # noqa: E402
from scratchlm.model.lora import LoraConfig, inject_lora  # noqa: E402
from scratchlm.tasks.classify import collate, encode_texts  # noqa: E402


@pytest.fixture(scope="module")
def onnx_lm(tiny_lm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_lm")
    info = export(tiny_lm_dir, "onnx", out, int8=True)
    return load_source(tiny_lm_dir), info


def test_lm_logits_match(onnx_lm):
    src, info = onnx_lm
    ids = src.tokenizer.encode("First Citizen: Before we proceed any further, hear me speak.")
    with torch.no_grad():
        want = src.model.logits(torch.tensor([ids])).numpy()
    got = OnnxCausalLM(info["path"], threads=1).logits(np.asarray([ids]))
    assert np.abs(got - want).max() < 1e-4


def test_kv_cache_greedy_matches_ours_in_a_padded_batch(onnx_lm):
    src, info = onnx_lm
    prompts = [src.tokenizer.encode("First Citizen: Before we proceed"), src.tokenizer.encode("You are")]
    want = generate(src.model, prompts, SamplingConfig(max_new_tokens=20, temperature=0),
                    eos_id=src.tokenizer.eos_id)
    got, timing = OnnxCausalLM(info["path"], threads=1).generate_greedy(prompts, 20)
    assert got == want and all(len(r) > 0 for r in want)
    assert timing["decode_s"] > 0


def test_int8_variant_is_smaller_and_close(onnx_lm):
    src, info = onnx_lm
    fp32, int8 = info["files"]
    assert int8.endswith("model.int8.onnx")
    ids = np.asarray([src.tokenizer.encode("First Citizen: Before we proceed any further")])
    a = OnnxCausalLM(fp32, threads=1).logits(ids)
    b = OnnxCausalLM(int8, threads=1).logits(ids)
    assert b.shape == a.shape and np.isfinite(b).all()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99  # int8 rounding, not a different function


def test_classifier_logits_any_padding(prepared, tmp_path):
    folder = save_classifier(tmp_path / "clf", prepared.tokenizer, pooling="mean")
    info = export(folder, "onnx", tmp_path / "onnx")
    src = load_source(folder)
    rows, _ = encode_texts(src.tokenizer, TEXTS, 64)
    idx, mask = collate(rows, src.tokenizer.pad_id)
    with torch.no_grad():
        want = src.model(idx, mask).numpy()
    onnx_clf = OnnxClassifier(info["path"], threads=1)
    assert np.abs(onnx_clf.logits(idx.numpy(), mask.numpy()) - want).max() < 1e-4
    left_idx = torch.stack([torch.roll(r, int((m == 0).sum())) for r, m in zip(idx, mask)])  # left padding
    left_mask = torch.stack([torch.roll(m, int((m == 0).sum())) for m in mask])
    assert np.abs(onnx_clf.logits(left_idx.numpy(), left_mask.numpy()) - want).max() < 1e-4
    probs = onnx_clf.predict_proba(TEXTS, src.tokenizer)
    assert np.allclose(probs, torch.softmax(torch.from_numpy(want), -1).numpy(), atol=1e-5)


def test_unmerged_lora_is_refused_then_merged(prepared, tmp_path):
    folder = save_classifier(tmp_path / "clf", prepared.tokenizer, pooling="last")
    src = load_source(folder)
    inject_lora(src.model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"))
    randomize_lora(src.model)
    rows, _ = encode_texts(src.tokenizer, TEXTS, 64)
    idx, mask = collate(rows, src.tokenizer.pad_id)
    with torch.no_grad():
        want = src.model(idx, mask).numpy()
    with pytest.raises(ExportError, match="unmerged LoRA.*--lora merge"):
        export_onnx(src, tmp_path / "refused")
    with pytest.raises(ExportError, match="PEFT adapter layout exists for Hugging Face"):
        export_onnx(src, tmp_path / "refused", lora="peft")
    info = export_onnx(src, tmp_path / "merged", lora="merge")
    got = OnnxClassifier(info["path"], threads=1).logits(idx.numpy(), mask.numpy())
    assert np.abs(got - want).max() < 1e-4
