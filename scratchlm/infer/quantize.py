"""int8 model folders for CPU inference: ``scratchlm quantize --model DIR --method int8``.

What is quantized: every linear layer of the decoder blocks and the token embedding (with the output head
tied to it), symmetric int8 per output channel (per token row for the embedding), computed by torchao
(``Int8Tensor.from_hp``, ``PerRow`` granularity). Norms, the rotary tables and a classifier's small ``score``
layer stay float32. The folder is an ordinary scratchlm model folder (config.json, model.safetensors,
tokenizer, manifest): ``model.safetensors`` holds ``<layer>.weight`` as int8 and ``<layer>.weight_scale`` as
float32, and config.json a ``quantization`` section, so the model folder loader (and every verb built on it:
generate, classify, translate, evaluate, serve) runs it through ``scratchlm.model.int8``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..export.formats import QUANTIZE_METHODS
from ..model import checkpoint as ckpt
from ..model.folder import load_model, read_model_config
from ..model.int8 import SCALE_SUFFIX, QuantizationError


def int8_per_row(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per row) of ``w`` by torchao: symmetric, one scale per output channel."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8Tensor
            from torchao.quantization.granularity import PerRow
    except ImportError as e:
        raise QuantizationError("int8 quantization needs torchao: pip install torchao") from e
    t = Int8Tensor.from_hp(w.detach().float().cpu(), granularity=PerRow())
    return t.qdata.contiguous(), t.scale.reshape(-1).float().contiguous()


def _quantized_modules(model: nn.Module) -> list[str]:
    """Paths of the linear layers to quantize: every nn.Linear of the decoder blocks (not the output heads)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{name}"]


def _embedding_path(model: nn.Module) -> str:
    return "backbone.embed" if hasattr(model, "backbone") else "embed"


def quantize_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """The int8 state dict of a loaded fp32 model (Transformer or SequenceClassifier) and its description."""
    state = ckpt.model_state(model)
    linears = _quantized_modules(model)
    emb = _embedding_path(model)
    backbone = model.backbone if hasattr(model, "backbone") else model
    tied = backbone.lm_head.weight is backbone.embed.weight
    untied_head = [] if tied or hasattr(model, "backbone") else ["lm_head"]
    for path in [*linears, emb, *untied_head]:
        q, s = int8_per_row(state[f"{path}.weight"])
        state[f"{path}.weight"] = q
        state[f"{path}.weight{SCALE_SUFFIX}"] = s
    info = {"method": "int8", "weights": "int8, symmetric, one scale per output channel (per token for the "
            "embedding)", "activations": "int8 dynamic (fbgemm) or float32 (torchao weight-only)",
            "library": "torchao", "modules": [*linears, *untied_head], "embedding": emb, "tied_output": tied}
    try:
        import torchao

        info["torchao_version"] = torchao.__version__
    except ImportError:
        pass
    return state, info


def quantize_folder(path: str | Path, out: str | Path, method: str = "int8") -> Path:
    """Quantize the model folder ``path`` into a new folder ``out``; returns ``out``."""
    if method not in QUANTIZE_METHODS:
        raise QuantizationError(f"--method {method!r}: choose one of {', '.join(QUANTIZE_METHODS)}")
    folder, config = read_model_config(path)
    if config.get("quantization"):
        q = config["quantization"]
        raise QuantizationError(f"{folder} is already quantized (config.json quantization.method="
                                f"{q.get('method')!r}); quantize the fp32 model it came from "
                                f"({q.get('source', 'unknown')}) instead")
    kind = config.get("kind") or "decoder"
    if kind != "decoder":
        baselines = " (the classical and recurrent baselines are not quantized)" if config.get("task") == "classify" \
            else ""
        raise QuantizationError(f"{folder}/config.json: kind={kind!r}: int8 quantization is for decoder "
                                f"models{baselines}")
    loaded = load_model(folder)
    state, info = quantize_state(loaded.model)
    info["source"] = str(folder)
    out_config = {**config, "quantization": info}
    extra = {}
    if (folder / "source.json").exists():
        extra["source.json"] = json.loads((folder / "source.json").read_text("utf-8"))
    return ckpt.save_checkpoint(Path(out), model_tensors=state, config=out_config, tokenizer=loaded.tokenizer,
                                extra_files=extra)
