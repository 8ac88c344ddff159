"""What every export format shares: load a model folder (optionally with a LoRA adapter), say what it is,
and refuse what a format cannot express, naming the field.

A scratchlm model folder holds either a language model (``task`` lm / translate / summarize: a
``Transformer``) or a decoder classifier (``task`` classify, ``kind`` decoder: a ``SequenceClassifier``).
Models fine-tuned with LoRA are saved merged (``config.json`` ``lora.merged``), with the adapter in the
PEFT layout beside them; ``lora="peft"`` recovers base weights + adapter from that pair.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.folder import LoadedModel, load_model, read_model_config
from ..model.heads import SequenceClassifier
from ..model.lora import load_adapter, lora_modules, merge_lora
from ..model.transformer import Transformer
from .formats import FORMATS, LORA_MODES


class ExportError(ValueError):
    """A model that this format cannot express, or an export request that does not make sense."""


class ExportSource(LoadedModel):
    """A model ready to export: the module (eval mode, fp32, CPU), its tokenizer and its config.json."""

    model: Transformer | SequenceClassifier

    @property
    def is_classifier(self) -> bool:
        return isinstance(self.model, SequenceClassifier)

    @property
    def backbone(self) -> Transformer:
        return self.model.backbone if self.is_classifier else self.model

    @property
    def has_unmerged_lora(self) -> bool:
        return any(not m.merged for m in lora_modules(self.model).values())


def _check_decoder(config: dict, folder: Path) -> None:
    """Refuse, before loading, a folder that does not hold a float32 Llama-architecture decoder."""
    if config.get("quantization"):
        q = config["quantization"]
        raise ExportError(f"{folder}/config.json: quantization={q.get('method')!r}: this is an int8 model made by "
                          f"`scratchlm quantize`; export the fp32 model it came from ({q.get('source', '?')}) "
                          f"instead (ONNX has its own int8 variant: --format onnx --int8)")
    kind = config.get("kind")
    if (config.get("task") or "lm") == "classify":
        if kind != "decoder":
            raise ExportError(f"{folder}/config.json: kind={kind!r}: only decoder classifiers are Llama models; "
                              f"the {kind} baseline has no HF/ONNX/GGUF export")
    elif "model" not in config or kind in ("gru", "lstm"):
        raise ExportError(f"{folder}/config.json: kind={kind!r}: not a decoder model, nothing to export "
                          f"as a Llama architecture")
    if (config.get("model") or {}).get("copy_dim"):
        raise ExportError(f"{folder}/config.json: model.copy_dim={config['model']['copy_dim']}: this decoder has a "
                          f"copy head (pointer-generator), which the Llama architecture of HF/ONNX/GGUF does not "
                          f"have; use it with scratchlm itself (summarize, serve, the Python API)")


def load_source(path: str | Path, *, adapter: str | Path | None = None, lora: str | None = None) -> ExportSource:
    """Load a model folder for export.

    adapter: a LoRA adapter folder (PEFT layout, this project's module paths) applied on top of the folder's
    weights, left unmerged. lora="peft" on a folder saved merged by ``finetune --method lora`` reloads its
    adapter and takes it back out of the weights (base = merged - B A * alpha/r), so the adapter can be
    exported on its own."""
    if lora is not None and lora not in LORA_MODES:
        raise ExportError(f"--lora {lora!r}: choose one of {', '.join(LORA_MODES)}")
    folder, config = read_model_config(path)
    _check_decoder(config, folder)
    src = ExportSource.view(load_model(folder, adapter=adapter))
    saved = config.get("lora") or {}
    if adapter is None and lora == "peft":
        if not saved.get("adapter"):
            raise ExportError(f"--lora peft: {folder} was not fine-tuned with LoRA (config.json has no 'lora' "
                              f"section); pass the adapter folder with --adapter")
        saved_adapter = Path(saved["adapter"])
        if not saved_adapter.is_absolute() and not saved_adapter.exists():
            saved_adapter = folder.parent / saved_adapter.name
        src.lora = load_adapter(src.model, saved_adapter, freeze=False)
        with torch.no_grad():  # the folder holds merged weights: subtract the adapter to get the base back
            for m in lora_modules(src.model).values():
                m.merged = True
                m.unmerge()
    src.model.eval()
    for p in src.model.parameters():
        p.requires_grad_(False)
    return src


def resolve_lora(src: ExportSource, fmt: str, lora: str | None) -> str | None:
    """Decide what happens to unmerged LoRA layers; merge them in place when asked. Returns the mode used.

    ONNX and GGUF have no adapter layout here: they need ``lora="merge"`` (refused otherwise, clearly)."""
    if not src.has_unmerged_lora:
        return None
    n = len(lora_modules(src.model))
    if lora is None:
        if fmt == "hf":
            lora = "peft"
        else:
            raise ExportError(f"the model carries {n} unmerged LoRA layers; a {fmt.upper()} file holds one set of "
                              f"weights, not an adapter: pass --lora merge to fold the adapter into the weights")
    if lora == "peft" and fmt != "hf":
        raise ExportError(f"--lora peft: the PEFT adapter layout exists for Hugging Face models only; "
                          f"{fmt.upper()} needs --lora merge")
    if lora == "merge":
        merge_lora(src.model)
        src.lora = None
    return lora


def check_exportable(src: ExportSource, fmt: str) -> None:
    """Refuse, naming the config.json field, what ``fmt`` cannot express."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    where = f"{src.folder}/config.json" if src.folder else "config"
    if src.is_classifier and src.model.head.score.bias is not None and fmt == "hf":
        raise ExportError(f"{where}: classifier.bias=true: LlamaForSequenceClassification's score layer has no "
                          f"bias; retrain with bias=false or use --format onnx")
    if fmt == "gguf":
        if src.is_classifier:
            raise ExportError(f"{where}: task=classify (section 'classifier'): llama.cpp's llama architecture "
                              f"has no sequence-classification head; export classifiers with --format hf or onnx")
