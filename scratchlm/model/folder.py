"""Load a model folder, whatever it holds: the one loader behind every verb, the Python API, quantize,
export and serve.

A model folder (what training exports as ``<run>/model``, what ``scratchlm quantize`` writes, what is
published in ``models/``) holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
``manifest.json`` (the sha256 of every file, see ``model.checkpoint``). ``config.json`` records the ``task``
(lm, classify, translate, summarize; none recorded = lm) and the ``kind`` of network (a decoder unless it
says rnn/lstm/gru, or bow/tfidf for the logistic regressions, which are saved without a manifest).

``load_model(name_or_path)``:

1. resolves the argument: a path (a model folder; a run folder, a checkpoint folder or ``checkpoints/``,
   following ``LATEST``), else a published name: a folder holding config.json in ``$SCRATCHLM_MODELS_DIR``,
   then in ``models/`` at the repository root;
2. reads config.json and checks the files against manifest.json;
3. builds the network the task and kind call for, loads the tokenizer (checked against the fingerprint the
   model was trained with) and the weights (int8 ones for a quantized folder), and a LoRA adapter if asked;
4. returns a ``LoadedModel``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..baselines.classical import ClassicalModel
from ..baselines.rnn import RNNClassifier
from ..baselines.seq2seq_rnn import Seq2SeqRNN
from ..tokenizer import Tokenizer
from . import checkpoint as ckpt
from .heads import SequenceClassifier
from .int8 import apply_int8
from .kinds import (
    CLASSICAL_KINDS,
    DECODER_TASKS,
    RECURRENT_CLASSIFIER_KINDS,
    RECURRENT_SEQ2SEQ_KINDS,
    SEQ2SEQ_TASKS,
    TASKS,
)
from .lora import LoraConfig, load_adapter, read_adapter_config
from .transformer import ModelConfig, Transformer

MAKE = {"lm": "scratchlm pretrain", "classify": "scratchlm finetune classify",
        "translate": "scratchlm finetune translate", "summarize": "scratchlm finetune summarize"}
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


class TaskError(ValueError):
    """A model folder whose task is unknown, or is not the one asked for."""


@dataclass
class LoadedModel:
    """A model folder in memory: the network (eval mode), its tokenizer (None for the logistic regressions),
    config.json and the folder it came from."""

    model: torch.nn.Module | ClassicalModel
    tokenizer: Tokenizer | None
    config: dict
    folder: Path
    lora: LoraConfig | None = None  # set while ``model`` carries an unmerged LoRA adapter

    @classmethod
    def view(cls, loaded: LoadedModel):
        """``loaded`` as this subclass, which adds what a model of its task can do (e.g. ``Classifier``)."""
        return cls(**vars(loaded))

    @property
    def task(self) -> str:
        return self.config.get("task") or "lm"

    @property
    def kind(self) -> str:
        return self.config.get("kind") or "decoder"


# ---- finding the folder ------------------------------------------------------------------------------------
def models_dirs() -> list[Path]:
    """Where published models are looked for, in order."""
    env = os.environ.get("SCRATCHLM_MODELS_DIR")
    return [Path(env), REPO_MODELS] if env else [REPO_MODELS]


def published_models() -> dict[str, Path]:
    """Published name -> folder (the first of ``models_dirs`` that has it)."""
    out: dict[str, Path] = {}
    for root in models_dirs():
        if root.is_dir():
            for sub in sorted(root.iterdir()):
                if (sub / "config.json").is_file():
                    out.setdefault(sub.name, sub)
    return out


def _is_name(text: str) -> bool:
    return bool(text) and "/" not in text and os.sep not in text and text not in (".", "..")


def resolve_model(name_or_path: str | Path) -> Path:
    """The folder that holds the model's files (see the module docstring). A path wins over a published name."""
    path = Path(name_or_path)
    try:
        return ckpt.resolve(path)
    except ckpt.CheckpointError:
        if (path / "config.json").is_file():
            return path  # written without a manifest: the logistic-regression baselines
        if path.exists():
            raise
    published = published_models()
    if isinstance(name_or_path, str) and _is_name(name_or_path) and name_or_path in published:
        return ckpt.resolve(published[name_or_path])
    where = " or ".join(str(d) for d in models_dirs())
    names = f"published: {', '.join(published)}" if published else f"none is published in {where}"
    raise FileNotFoundError(f"model folder not found: {name_or_path} (not a folder, nor a published model name; "
                            f"{names})")


def read_model_config(name_or_path: str | Path) -> tuple[Path, dict]:
    """(the resolved folder, its config.json)."""
    folder = resolve_model(name_or_path)
    return folder, ckpt.read_config(folder)


def task_of(config: dict, folder: Path) -> str:
    task = config.get("task") or "lm"
    if task not in TASKS:
        raise TaskError(f"{folder}/config.json: unknown task {task!r} (known: {', '.join(TASKS)})")
    return task


# ---- building and loading ----------------------------------------------------------------------------------
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


def build_network(config: dict, folder: Path) -> torch.nn.Module:
    """The network config.json describes, with fresh weights."""
    task, kind = task_of(config, folder), config.get("kind") or "decoder"
    if task == "classify" and kind in RECURRENT_CLASSIFIER_KINDS:
        return RNNClassifier.from_config_dict(config)
    if task in SEQ2SEQ_TASKS and kind in RECURRENT_SEQ2SEQ_KINDS:
        return Seq2SeqRNN.from_config_dict(config)
    if task == "classify" and kind != "decoder":
        raise ckpt.CheckpointError(f"{folder}/config.json: unknown classifier kind {kind!r}")
    if "model" not in config:
        raise ckpt.CheckpointError(f"{folder}/config.json has no 'model' section: not a scratchlm model")
    decoder = Transformer(model_config_from_dict(config["model"]))
    if task != "classify":
        return decoder
    c = config["classifier"]
    return SequenceClassifier(decoder, c["num_labels"], pooling=c["pooling"], dropout=c.get("dropout", 0.0),
                              pad_id=c.get("pad_id"), label_names=c.get("label_names"), bias=c.get("bias", False))


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True,
               tasks: Collection[str] | None = None, adapter: str | Path | None = None) -> LoadedModel:
    """Load a model folder (see the module docstring). ``tasks``: the tasks the caller can use (another one is
    a TaskError); ``verify=False`` skips the manifest check; ``adapter``: a LoRA adapter folder (PEFT layout)
    applied on top of the weights, unmerged."""
    folder, config = read_model_config(name_or_path)
    classical = config.get("kind") in CLASSICAL_KINDS  # saved without a manifest
    if verify and not classical:
        ckpt.verify(folder)
    task = task_of(config, folder)
    if tasks is not None and task not in tasks:
        raise TaskError(f"{folder} holds a '{task}' model, not a {' or '.join(tasks)} model (make one with "
                        f"`{MAKE[next(iter(tasks))]}`)")
    if classical:
        return LoadedModel(ClassicalModel.load(folder), None, config, folder)
    model = build_network(config, folder)
    tokenizer = Tokenizer.load(folder)
    check_tokenizer(config, tokenizer, folder, model.cfg.vocab_size)
    if config.get("quantization"):  # an int8 folder made by `scratchlm quantize`
        apply_int8(model, ckpt.load_tensors(folder), config["quantization"], folder)
    else:
        ckpt.load_model_weights(model, ckpt.load_tensors(folder), str(folder / "model.safetensors"))
    lora = None
    if adapter is not None:
        read_adapter_config(adapter)  # a clear error when the folder is not an adapter
        lora = load_adapter(model, adapter, freeze=False)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, config, folder, lora)


def load_decoder(name_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A decoder language model (lm, or a translation/summarization decoder): what generation, continued
    pretraining, fine-tuning and distillation start from."""
    loaded = load_model(name_or_path, device, tasks=DECODER_TASKS)
    if not isinstance(loaded.model, Transformer):
        raise TaskError(f"{loaded.folder} holds a {loaded.kind} {loaded.task} model, not a decoder")
    return loaded
