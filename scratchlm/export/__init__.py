"""``scratchlm export --format hf|onnx|gguf``: a trained model folder in the formats other tools load.

    hf    a transformers folder (LlamaForCausalLM / LlamaForSequenceClassification, AutoTokenizer); LoRA as a
          PEFT adapter beside the base model, or merged                                    (hf.py)
    onnx  an ONNX graph with KV-cache inputs/outputs for ONNX Runtime, optionally int8     (onnx.py)
    gguf  one GGUF file for llama.cpp (Llama architecture, byte-level BPE tokenizer)       (gguf.py)

Each needs its optional packages (``pip install scratchlm[export]``): transformers (+ peft to load
adapters), onnx + onnxscript + onnxruntime, gguf (+ llama-cpp-python to run the file).
"""

from __future__ import annotations

from pathlib import Path

from .formats import FORMATS, LORA_MODES

__all__ = ["FORMATS", "LORA_MODES", "ExportError", "ExportSource", "export", "load_source"]


def __getattr__(name: str):  # the heavy parts (torch, the model) load on first use, not with the CLI parser
    if name in ("ExportError", "ExportSource", "load_source"):
        from . import common

        return getattr(common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_out(model: str | Path, fmt: str) -> Path:
    model = Path(model)
    return model.with_name(f"{model.name}-{fmt}")


def export(model: str | Path, fmt: str, out: str | Path | None = None, *, adapter: str | Path | None = None,
           lora: str | None = None, int8: bool = False, dtype: str = "f32") -> dict:
    """Export the model folder ``model`` to ``fmt``; returns {path, files, load, notes}."""
    from .common import ExportError, load_source

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ExportError(f"--int8 is for --format onnx (ONNX Runtime quantization); for an int8 model that "
                          f"scratchlm itself runs use `scratchlm quantize`; got --format {fmt}")
    src = load_source(model, adapter=adapter, lora=lora)
    out = Path(out) if out else default_out(src.folder, fmt)
    if fmt == "hf":
        from .hf import export_hf

        return export_hf(src, out, lora=lora)
    if fmt == "onnx":
        from .onnx import export_onnx

        return export_onnx(src, out, lora=lora, int8=int8)
    from .gguf import export_gguf

    return export_gguf(src, out, lora=lora, dtype=dtype)
