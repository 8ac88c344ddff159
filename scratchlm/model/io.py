"""Load a trained model folder (``config.json`` + ``model.safetensors`` + ``tokenizer.json``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..tokenizer import Tokenizer
from ..train import checkpoint as ckpt
from .transformer import ModelConfig, Transformer


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Tokenizer
    config: dict
    folder: Path


def model_config_from_dict(d: dict) -> ModelConfig:
    names = {f.name for f in fields(ModelConfig)}
    unknown = set(d) - names
    if unknown:
        raise ckpt.CheckpointError(f"config.json: unknown model fields {sorted(unknown)}")
    cfg = ModelConfig(**d)
    cfg.validate()
    return cfg


def check_tokenizer(config: dict, tokenizer: Tokenizer, folder: Path, model_vocab: int) -> None:
    expected = config.get("tokenizer_fingerprint")
    if expected and expected != tokenizer.fingerprint:
        raise ckpt.CheckpointError(
            f"tokenizer mismatch in {folder}: the model was trained with tokenizer {expected[:12]} but "
            f"tokenizer.json is {tokenizer.fingerprint[:12]}; use the tokenizer.json saved with the model")
    if tokenizer.vocab_size > model_vocab:
        raise ckpt.CheckpointError(f"tokenizer in {folder} has {tokenizer.vocab_size} tokens but the model only "
                                   f"{model_vocab} embeddings: they do not belong together")


def load_model(path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True) -> LoadedModel:
    folder = ckpt.resolve(path)
    if verify:
        ckpt.verify(folder)
    config = ckpt.read_config(folder)
    if "model" not in config:
        raise ckpt.CheckpointError(f"{folder}/config.json has no 'model' section: not a scratchlm model")
    mcfg = model_config_from_dict(config["model"])
    tokenizer = Tokenizer.load(folder)
    check_tokenizer(config, tokenizer, folder, mcfg.vocab_size)
    model = Transformer(mcfg)
    if config.get("quantization"):  # an int8 folder made by `scratchlm quantize`
        from ..quantize import apply_int8

        apply_int8(model, ckpt.load_tensors(folder), config["quantization"], folder)
    else:
        ckpt.load_model_weights(model, ckpt.load_tensors(folder), str(folder / "model.safetensors"))
    model.to(device).eval()
    return LoadedModel(model, tokenizer, config, folder)
