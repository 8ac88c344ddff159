"""`scratchlm quantize --method int8`: a folder every loader takes, 3.5x+ smaller, close to fp32; bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("torchao", reason="torchao is not installed (pip install scratchlm[export])")

from conftest import tiny_model_config  # noqa: E402
from test_export_hf import TEXTS, save_classifier  # noqa: E402

import scratchlm.infer.quantize as q  # noqa: E402
import scratchlm.model.int8 as int8_layers  # noqa: E402
from scratchlm.config import to_dict  # noqa: E402
from scratchlm.export import ExportError, export  # noqa: E402
from scratchlm.infer.classify import load_classifier  # noqa: E402
from scratchlm.infer.generate import SamplingConfig, generate  # noqa: E402
from scratchlm.model import checkpoint as ckpt  # noqa: E402
from scratchlm.model.folder import load_model  # noqa: E402
from scratchlm.model.transformer import Transformer  # noqa: E402


@pytest.fixture(scope="module")
def lm_pair(prepared, tmp_path_factory):
    """A 2-layer x 128 LM (seeded) and its int8 folder."""
    tok = prepared.tokenizer
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(tok.vocab_size, n_embd=128, n_head=4, n_kv_head=2, block_size=64))
    root = tmp_path_factory.mktemp("quant")
    config = {"task": "lm", "tokenizer_fingerprint": tok.fingerprint, "model": to_dict(model.cfg)}
    fp32 = ckpt.save_checkpoint(root / "model", model_tensors=ckpt.model_state(model), config=config, tokenizer=tok)
    return fp32, q.quantize_folder(fp32, root / "model-int8")


def _size(folder):
    return (folder / "model.safetensors").stat().st_size


def test_int8_folder_is_smaller_and_loads_like_any_model(lm_pair):
    fp32, int8 = lm_pair
    assert _size(fp32) / _size(int8) >= 3.5
    ckpt.verify(int8)  # an ordinary, checksummed model folder
    a, b = load_model(fp32), load_model(int8)
    assert b.config["quantization"]["method"] == "int8"
    assert isinstance(b.model.embed, int8_layers.Int8Embedding)
    ids = torch.tensor([a.tokenizer.encode("First Citizen: Before we proceed any further, hear me speak.")])
    with torch.inference_mode():
        la, lb = a.model.logits(ids), b.model.logits(ids)
    rel = ((la - lb).norm() / la.norm()).item()
    assert rel < 0.05, rel
    assert (la.argmax(-1) == lb.argmax(-1)).float().mean() > 0.9
    out = generate(b.model, [ids[0, :6].tolist()], SamplingConfig(max_new_tokens=8, temperature=0))
    assert len(out[0]) > 0


def test_int8_classifier_loads_and_predicts(prepared, tmp_path):
    folder = save_classifier(tmp_path / "clf", prepared.tokenizer, pooling="mean")
    int8 = q.quantize_folder(folder, tmp_path / "clf-int8")
    a, b = load_classifier(folder), load_classifier(int8)
    pa, pb = a.predict_proba(TEXTS), b.predict_proba(TEXTS)
    assert pb.shape == pa.shape and np.allclose(pb.sum(1), 1, atol=1e-5)
    assert np.abs(pa - pb).max() < 0.05


def test_quantizing_twice_and_exporting_int8_are_refused(lm_pair, tmp_path):
    _, int8 = lm_pair
    with pytest.raises(q.QuantizationError, match="already quantized"):
        q.quantize_folder(int8, tmp_path / "again")
    with pytest.raises(ExportError, match="int8 model"):
        export(int8, "hf", tmp_path / "hf")


def test_backend_fallback_and_clear_error(lm_pair, monkeypatch):
    fp32, int8 = lm_pair
    monkeypatch.setattr(int8_layers, "_fbgemm_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="no fbgemm int8 kernel"):
        loaded = load_model(int8)  # the documented fallback: torchao's weight-only int8
    ref = load_model(fp32)
    ids = torch.tensor([[5, 40, 41, 42, 43, 44]])
    with torch.inference_mode():
        la, lb = ref.model.logits(ids), loaded.model.logits(ids)
    assert ((la - lb).norm() / la.norm()).item() < 0.05
    monkeypatch.setattr(int8_layers, "_torchao_available", lambda: False)
    with pytest.raises(q.QuantizationError, match="no int8 kernel.*pip install torchao"):
        load_model(int8)
    monkeypatch.setenv("SCRATCHLM_INT8_BACKEND", "fbgemm")
    with pytest.raises(q.QuantizationError, match="fbgemm"):
        load_model(int8)


def test_cli_reports_size(lm_pair, tmp_path, capsys):
    import argparse

    from scratchlm.cli.export import add_quantize_parser

    fp32, _ = lm_pair
    parser = argparse.ArgumentParser()
    add_quantize_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["quantize", "--model", str(fp32), "--out", str(tmp_path / "cli-int8")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert args.fn(args) == 0
    assert "smaller" in capsys.readouterr().out and (tmp_path / "cli-int8" / "manifest.json").exists()
