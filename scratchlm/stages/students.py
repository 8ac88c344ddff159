"""A distillation student: its architecture and the weights it starts from (``plan_student``).

The student is

* a preset name (``scratchlm models``), a YAML file or a mapping of ModelConfig fields (``preset:`` allowed):
  random weights, except the token embedding (``student_embedding``): the teacher's when the widths are equal,
  its projection on the teacher embedding's top principal directions when the student is narrower;
* ``teacher-layers:0,2,5``: the teacher's architecture with those blocks, copied with the embedding, the
  final norm (and a classifier's head);
* a model folder (e.g. a smaller pretrained decoder): its weights; its tokenizer must be the teacher's.

Vocabulary and context come from the teacher: the soft targets compare distributions token by token, so a
student with another tokenizer is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ConfigError, from_dict, load_yaml, to_dict
from ..model import checkpoint as ckpt
from ..model.folder import load_model
from ..model.transformer import PRESETS, ModelConfig, Transformer


@dataclass
class StudentPlan:
    config: ModelConfig
    description: str
    init: dict[str, torch.Tensor] = field(default_factory=dict)  # backbone tensors to start from
    copied_layers: list[int] | None = None  # teacher-layers: the teacher block each student block copies
    projection: torch.Tensor | None = None  # (teacher width, student width): the PCA basis of the embedding

    def build(self, seed: int) -> Transformer:
        """The student: seeded random weights, then ``init`` over them."""
        torch.manual_seed(seed)
        model = Transformer(self.config)
        if self.init:
            unexpected = model.load_state_dict(self.init, strict=False).unexpected_keys
            if unexpected:
                raise ConfigError(f"the student has no tensors {unexpected[:5]} to start from")
        return model


def tokenizer_error(what: str, fp: str, n: int, teacher_fp: str, teacher_n: int) -> ConfigError:
    return ConfigError(
        f"{what} uses another tokenizer ({n:,} tokens, fingerprint {fp[:12]}) than the teacher ({teacher_n:,} "
        f"tokens, {teacher_fp[:12]}). Distillation compares the two models' distributions token by token, so "
        f"they must share one vocabulary: use a student pretrained with the teacher's tokenizer, or a preset / "
        f"model config / teacher-layers student (those take the teacher's tokenizer)")


def plan_student(spec: str | dict, embedding: str, teacher: Transformer | None, tokenizer,
                 block_size: int) -> StudentPlan:
    """The student's architecture and starting weights. ``teacher``: the teacher's decoder (None for a
    recurrent teacher); ``block_size``: the context a preset/config student gets unless it sets one."""
    if isinstance(spec, str) and spec.startswith("teacher-layers:"):
        if teacher is None:
            raise ConfigError("student teacher-layers:... needs a decoder teacher")
        if embedding not in ("auto", "teacher"):
            raise ConfigError(f"student_embedding {embedding!r}: a teacher-layers student copies the teacher's")
        return _teacher_layers(spec, teacher)
    if isinstance(spec, str) and Path(spec).is_dir():
        return _from_folder(spec, embedding, tokenizer)
    if isinstance(spec, str) and spec in PRESETS:
        fields = {k: v for k, v in PRESETS[spec].items() if k != "block_size"}
        name = f"preset {spec}"
    elif isinstance(spec, str) and spec.endswith((".yaml", ".yml")):
        fields = load_yaml(spec)
        fields = fields.get("model", fields)
        name = spec
    elif isinstance(spec, dict):
        fields, name = dict(spec), "config"
    else:
        raise ConfigError(f"student: {spec!r} is neither a preset ({', '.join(PRESETS)}), a .yaml model config, "
                          f"a model folder nor teacher-layers:i,j,...")
    fields = dict(fields)
    preset = fields.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"student.preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        fields = {**{k: v for k, v in PRESETS[preset].items() if k != "block_size"}, **fields}
    vocab = tokenizer.vocab_size if teacher is None else teacher.cfg.vocab_size
    if fields.get("vocab_size", vocab) != vocab:
        raise ConfigError(f"student.vocab_size {fields['vocab_size']} differs from the teacher's {vocab}: the student "
                          f"must use the teacher's tokenizer (leave vocab_size out)")
    fields.update(vocab_size=vocab)
    fields.setdefault("block_size", block_size)
    try:
        cfg = from_dict(ModelConfig, fields, prefix="student")
        cfg.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return _embedding_init(StudentPlan(cfg, f"{name}: {_shape(cfg)}, random blocks"), embedding, teacher)


def _shape(cfg: ModelConfig) -> str:
    return f"{cfg.n_layer} x {cfg.n_embd} ({cfg.n_head} heads, {cfg.n_kv_head} kv, MLP {cfg.mlp_hidden})"


def _embedding_init(plan: StudentPlan, embedding: str, teacher: Transformer | None) -> StudentPlan:
    d_s = plan.config.n_embd
    if teacher is None:
        if embedding not in ("auto", "random"):
            raise ConfigError(f"student_embedding {embedding!r} needs a decoder teacher")
        return plan
    d_t = teacher.cfg.n_embd
    if embedding == "auto":
        embedding = "teacher" if d_s == d_t else "pca" if d_s < d_t else "random"
    untied = not plan.config.tie_embeddings
    if embedding == "teacher":
        if d_s != d_t:
            raise ConfigError(f"student_embedding teacher needs the teacher's width {d_t} (student: {d_s}); use pca")
        plan.init["embed.weight"] = teacher.embed.weight.detach().clone()
        if untied:
            plan.init["lm_head.weight"] = teacher.lm_head.weight.detach().clone()
        plan.description += ", embedding copied from the teacher"
    elif embedding == "pca":
        if d_s > d_t:
            raise ConfigError(f"student_embedding pca needs a student narrower than the teacher ({d_s} > {d_t})")
        emb = teacher.embed.weight.detach().float()
        basis = torch.linalg.svd(emb, full_matrices=False).Vh[:d_s].T.contiguous()  # (d_t, d_s)
        plan.init["embed.weight"] = emb @ basis
        if untied:
            plan.init["lm_head.weight"] = teacher.lm_head.weight.detach().float() @ basis
        plan.projection = basis
        kept = (plan.init["embed.weight"].pow(2).sum() / emb.pow(2).sum()).item()
        plan.description += (f", embedding = the teacher's on its top {d_s} principal directions "
                             f"({kept:.1%} of its energy)")
    return plan


def _teacher_layers(spec: str, teacher: Transformer) -> StudentPlan:
    text = spec.split(":", 1)[1]
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"student {spec!r}: list the teacher blocks to keep, e.g. teacher-layers:0,2,5") from None
    n = teacher.cfg.n_layer
    if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= n:
        raise ConfigError(f"student {spec!r}: block indices must be increasing, distinct and in 0..{n - 1}")
    cfg = ModelConfig(**{**to_dict(teacher.cfg), "n_layer": len(layers)})
    state = ckpt.model_state(teacher)
    init = {}
    for k, v in state.items():
        if k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            if int(i) in layers:
                init[f"layers.{layers.index(int(i))}.{rest}"] = v.clone()
        else:
            init[k] = v.clone()
    return StudentPlan(cfg, f"teacher-layers {layers} of {n}: {_shape(cfg)}, copied with the embedding and "
                            f"final norm", init, copied_layers=layers)


def _from_folder(folder: str, embedding: str, tokenizer) -> StudentPlan:
    loaded = load_model(folder)
    if loaded.tokenizer.fingerprint != tokenizer.fingerprint:
        raise tokenizer_error(f"the student model {folder}", loaded.tokenizer.fingerprint,
                               loaded.tokenizer.vocab_size, tokenizer.fingerprint, tokenizer.vocab_size)
    if embedding != "auto":
        raise ConfigError(f"student_embedding {embedding!r}: a student model folder starts from its own weights")
    if not isinstance(loaded.model, Transformer):
        raise ConfigError(f"student {folder} is not a decoder language model")
    return StudentPlan(loaded.model.cfg, f"pretrained {folder}: {_shape(loaded.model.cfg)}",
                       ckpt.model_state(loaded.model))
