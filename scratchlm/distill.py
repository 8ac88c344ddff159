"""Knowledge distillation end to end: a trained teacher -> a smaller student of the same kind, through the
shared training loop (:class:`~scratchlm.tasks.distill.DistillTask` wraps the student's own task).

    scratchlm distill --config distill_imdb                            # the IMDb recipe (classification)
    scratchlm distill --teacher runs/imdb/decoder-full/model --student 1m
    scratchlm distill --teacher runs/tatoeba_en_zh/decoder/model --student teacher-layers:0,2,5
    scratchlm distill --teacher runs/imdb_lm/model --student student.yaml --task lm

The data, splits, preprocessing and training defaults are the teacher's own recipe (saved in its
config.json), so teacher and student are scored on the same test set; every other key of a distillation
recipe (or a dotted override: ``--epochs 3``, ``--train.lr 1e-3``, ``--data.max_train_examples 500``)
changes that recipe. The student is

* a preset name (``scratchlm models``), a YAML file or a mapping of ModelConfig fields (``preset:`` allowed):
  random weights, except the token embedding (``student_embedding``): the teacher's when the widths are equal,
  its projection on the teacher embedding's top principal directions when the student is narrower;
* ``teacher-layers:0,2,5``: the teacher's architecture with those blocks, copied with the embedding, the
  final norm (and a classifier's head);
* a model folder (e.g. a smaller pretrained decoder): its weights; its tokenizer must be the teacher's.

Vocabulary and context come from the teacher: the soft targets compare distributions token by token, so a
student with another tokenizer is refused. Output: ``<out_root>/<name>/`` like any run of the task
(``model/`` loads with ``load_classifier`` / ``load_seq2seq`` / ``load_model``; resumable with ``--resume``)
and ``report.json`` with the task's metrics and a ``distillation`` section (teacher vs student parameters,
test scores, throughput).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from . import __version__
from .config import ConfigError, _deep_merge, apply_overrides, from_dict, load_yaml, parse_override, to_dict
from .model.transformer import PRESETS, ModelConfig, Transformer
from .stages import count_parameters
from .tasks.distill import DistillLossConfig, DistillStudent, DistillTask, layer_pairs, make_projections
from .train import checkpoint as ckpt
from .train.trainer import Trainer

TASKS = ("lm", "classify", "translate", "summarize")


@dataclass
class DistillConfig:
    task: Literal["auto", "lm", "classify", "translate", "summarize"] = "auto"  # auto: the teacher's
    teacher: str = ""  # the teacher's model folder (<run>/model: its report.json is looked for in <run>)
    student: str | dict = ""  # preset | model YAML | {ModelConfig fields} | model folder | teacher-layers:0,2,5
    # preset/config students: the token embedding's start. auto = "teacher" at the teacher's width, "pca" when
    # narrower (the teacher's embedding on its top principal directions), "random" when wider.
    student_embedding: Literal["auto", "teacher", "pca", "random"] = "auto"
    distill: DistillLossConfig = field(default_factory=DistillLossConfig)
    # the teacher's test scores beside the student's: auto = from the teacher run's report.json when it scored
    # the same test set, else measured here; always = measured here; never = left out
    teacher_eval: Literal["auto", "always", "never"] = "auto"
    speed_examples: int = 1000  # classify: test texts timed with both models, back to back (examples/s); 0: off
    task_recipe: dict = field(default_factory=dict)  # every other key: the task recipe, over the teacher's

    def validate(self) -> None:
        if not self.teacher:
            raise ConfigError("teacher: the teacher's model folder is needed (--teacher DIR)")
        if self.student in ("", None, {}):
            raise ConfigError("student: give a preset (e.g. 1m), a model YAML, a mapping of model fields, a model "
                              "folder or teacher-layers:0,2,5 (--student ...)")
        if self.speed_examples < 0:
            raise ConfigError(f"speed_examples must be >= 0, got {self.speed_examples}")


OWN_KEYS = ("task", "teacher", "student", "student_embedding", "distill", "teacher_eval", "speed_examples")


def build_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                 defaults: dict | None = None) -> DistillConfig:
    """YAML recipe <- ``defaults`` (what CLI flags set) <- ``key=value`` overrides. The distillation keys
    (``OWN_KEYS``) make the DistillConfig; every other key goes to the task recipe (checked when it is
    built over the teacher's)."""
    data = load_yaml(yaml_path) if yaml_path else {}
    data.update(defaults or {})
    data = apply_overrides(data, [parse_override(o) for o in overrides or []])
    own = {k: data.pop(k) for k in OWN_KEYS if k in data}
    cfg = from_dict(DistillConfig, own)
    cfg.task_recipe = data
    return cfg


# ------------------------------------------------------------------------------------------------ students
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


def _tokenizer_error(what: str, fp: str, n: int, teacher_fp: str, teacher_n: int) -> ConfigError:
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
    from .model.io import load_model

    loaded = load_model(folder)
    if loaded.tokenizer.fingerprint != tokenizer.fingerprint:
        raise _tokenizer_error(f"the student model {folder}", loaded.tokenizer.fingerprint,
                               loaded.tokenizer.vocab_size, tokenizer.fingerprint, tokenizer.vocab_size)
    if embedding != "auto":
        raise ConfigError(f"student_embedding {embedding!r}: a student model folder starts from its own weights")
    if not isinstance(loaded.model, Transformer):
        raise ConfigError(f"student {folder} is not a decoder language model")
    return StudentPlan(loaded.model.cfg, f"pretrained {folder}: {_shape(loaded.model.cfg)}",
                       ckpt.model_state(loaded.model))


# ------------------------------------------------------------------------------------------------ shared
def teacher_task(config: dict) -> str:
    return config.get("task") or "lm"


def _task_recipe(cls, cfg: DistillConfig, folder: Path, tconf: dict, defaults: dict, forced: dict):
    """The teacher's saved recipe, reset where a student differs (``defaults``), under the distillation
    recipe's task keys, with ``forced`` last."""
    saved = tconf.get("recipe")
    if not isinstance(saved, dict):
        raise ConfigError(f"{folder}/config.json records no recipe, so the teacher's data is unknown; train the "
                          f"teacher with `scratchlm finetune` (which saves it)")
    base = json.loads(json.dumps(saved))
    base["train"] = {**(base.get("train") or {}), "out_dir": "", "resume": False}
    base.update(defaults)
    merged = _deep_merge(base, cfg.task_recipe)
    for key in forced:
        if key in cfg.task_recipe and cfg.task_recipe[key] != forced[key]:
            raise ConfigError(f"{key}: a distilled student is always {key}={forced[key]!r}")
    merged.update(forced)
    return from_dict(cls, merged)


def _record(cfg: DistillConfig, folder: Path, plan: StudentPlan, pairs, n_teacher: int) -> dict:
    return {"teacher": str(folder), "teacher_parameters": n_teacher, "student": cfg.student,
            "student_init": plan.description, "loss": to_dict(cfg.distill), "layer_pairs": [list(p) for p in pairs]}


def _pairs(cfg: DistillConfig, plan: StudentPlan, teacher: Transformer | None) -> list[tuple[int, int]]:
    if cfg.distill.beta <= 0:
        return []
    if teacher is None:
        raise ConfigError("distill.beta > 0 (hidden-state matching) needs a decoder teacher")
    return layer_pairs(cfg.distill.layers, plan.config.n_layer, teacher.cfg.n_layer, plan.copied_layers)


def _wrap(student: torch.nn.Module, plan: StudentPlan, pairs, teacher: Transformer | None) -> DistillStudent:
    if not pairs:
        return DistillStudent(student)
    return DistillStudent(student, make_projections(pairs, plan.config.n_embd, teacher.cfg.n_embd, plan.projection))


def export_student(model_dir: Path, tokenizer) -> None:
    """Rewrite the exported ``model/`` (DistillStudent weights) as a plain model folder of the student."""
    tensors = ckpt.load_tensors(model_dir)
    student = {k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")}
    source = model_dir / "source.json"
    extra = {"source.json": json.loads(source.read_text("utf-8"))} if source.exists() else None
    ckpt.save_checkpoint(model_dir, model_tensors=student, config=ckpt.read_config(model_dir), tokenizer=tokenizer,
                         extra_files=extra)


def _teacher_report(folder: Path, test_name: str, n: int) -> dict | None:
    """The teacher run's report.json when it scored the same test set (split name and size)."""
    path = folder.parent / "report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text("utf-8"))
    test = report.get("test") or {}
    size = test.get("n", report.get("test_examples"))
    if report.get("test_split") != test_name or size != n:
        return None
    return {**report, "source": str(path)}


def _write(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _steps(train_cfg, epochs: float | None, units_per_epoch: int) -> None:
    if epochs is not None:
        gb = train_cfg.global_batch_size or train_cfg.micro_batch_size
        train_cfg.max_steps = max(1, math.ceil(epochs * units_per_epoch / gb))


# ------------------------------------------------------------------------------------------------ classify
def _run_classify(cfg: DistillConfig, folder: Path, tconf: dict, log) -> dict:
    import numpy as np

    from .classify import (
        CLASSICAL_KINDS,
        ClassifyConfig,
        _class_weights,
        _finish,
        build_classifier,
        evaluate_split,
        load_classifier,
        model_config,
    )
    from .data.labeled import assert_not_pretrained_on, load_labeled
    from .tasks.classify import ClassifyTask, encode_texts

    teacher = load_classifier(folder)
    if teacher.kind in CLASSICAL_KINDS:
        raise ConfigError(f"{folder} is a {teacher.kind} classifier: distillation needs a neural teacher's logits")
    ccfg = _task_recipe(ClassifyConfig, cfg, folder, tconf,
                        {"name": "decoder-distilled", "method": "full", "init_weights": "pretrained",
                         "freeze_layers": 0, "pretrain": None},
                        {"kind": "decoder"})
    out = ccfg.out_dir
    ccfg.train.out_dir = str(out)
    tok = teacher.tokenizer
    assert_not_pretrained_on(tconf.get("backbone") or {}, ccfg.data.dataset, ccfg.data.test_split)
    data = load_labeled(ccfg.data, log=log)
    log(f"data: {data.summary()}")
    if data.label_names != teacher.label_names:
        raise ConfigError(f"the data's labels {data.label_names} differ from the teacher's {teacher.label_names}")
    if not len(data.val):
        raise ConfigError("data.val_fraction is 0: distillation needs a validation set for model selection")
    train_rows, cut = encode_texts(tok, data.train.texts, ccfg.max_length, ccfg.head_fraction)
    val_rows, _ = encode_texts(tok, data.val.texts, ccfg.max_length, ccfg.head_fraction)
    tback = teacher.model.backbone if teacher.kind == "decoder" else None
    plan = plan_student(cfg.student, cfg.student_embedding, tback, tok,
                        tback.cfg.block_size if tback is not None else ccfg.max_length)
    if ccfg.max_length > plan.config.block_size:
        raise ConfigError(f"max_length {ccfg.max_length} exceeds the student's context {plan.config.block_size}")
    model = build_classifier(ccfg, tok, data.num_labels, data.label_names, plan.build(ccfg.train.seed))
    if plan.copied_layers is not None:
        model.head.score.load_state_dict(teacher.model.head.score.state_dict())
    pairs = _pairs(cfg, plan, tback)
    weights = _class_weights(ccfg, data)
    inner = ClassifyTask(model, train_rows, data.train.labels, val_rows, data.val.labels, num_labels=data.num_labels,
                         pad_id=tok.pad_id, seed=ccfg.train.seed, class_weights=weights,
                         label_smoothing=ccfg.label_smoothing, eval_batch_size=ccfg.eval_batch_size)
    task = DistillTask(inner, teacher.model, _wrap(model, plan, pairs, tback), kind="classify", cfg=cfg.distill,
                       pairs=pairs, class_weights=weights, label_smoothing=ccfg.label_smoothing, log=log)
    gb = ccfg.train.global_batch_size or ccfg.train.micro_batch_size
    _steps(ccfg.train, ccfg.epochs, inner.steps_per_epoch(gb) * gb)
    n_t, n_s = count_parameters(teacher.model), count_parameters(model)
    log(f"distill: teacher {n_t / 1e6:.2f}M parameters -> student {n_s / 1e6:.2f}M ({n_s / n_t:.1%}); "
        f"{plan.description}; {ccfg.train.max_steps} steps of {gb} examples")
    record = _record(cfg, folder, plan, pairs, n_t)
    run_config = {"task": "classify", "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  **model_config(model), "label_names": data.label_names, "label_values": data.label_values,
                  "max_length": ccfg.max_length, "head_fraction": ccfg.head_fraction,
                  "clean": to_dict(ccfg.data.clean), "recipe": to_dict(ccfg), "backbone": tconf.get("backbone"),
                  "distill": record}
    mean_len = int(np.mean([len(r) for r in train_rows]))
    flops = model.backbone.flops_per_token(mean_len, lm_head=False)
    trainer = Trainer(ccfg.train, task, run_config=run_config, tokenizer=tok, flops_per_token=flops)
    result = trainer.fit()
    info = {"description": f"decoder distilled from {folder} ({plan.description}; alpha {cfg.distill.alpha}, "
                           f"T {cfg.distill.temperature}, beta {cfg.distill.beta})",
            "parameters": n_s, "trainable_parameters": n_s, "train_seconds": round(result.train_seconds, 1),
            "steps": result.step, "best_step": result.best_step, "stopped_because": result.stopped_because,
            "train_examples": len(train_rows), "truncated_train_examples": cut, "model_dir": str(result.model_dir),
            "distill": record}
    if not trainer.dist.is_main:
        return info
    export_student(result.model_dir, tok)
    student = load_classifier(result.model_dir)  # on the CPU, as `finetune classify` scores its models
    teacher.model.cpu()  # the loop may have moved it to the training device: both are timed on the same one
    bs = ccfg.eval_batch_size
    teacher_test = None
    if data.test is not None and cfg.teacher_eval != "never":
        saved = _teacher_report(folder, data.test.name, len(data.test)) if cfg.teacher_eval == "auto" else None
        if saved is not None:
            teacher_test = {**saved["test"], "source": saved["source"]}
        else:
            log(f"distill: scoring the teacher on {data.test.name} ({len(data.test):,} examples)")
            m, _, seconds = evaluate_split(teacher, data.test.texts, data.test.labels, batch_size=bs,
                                           progress=ccfg.train.progress)
            teacher_test = {**m, "examples_per_s": len(data.test) / seconds, "source": "measured by this run"}
    report = _finish(ccfg, out, student, data, info, log)
    summary = {"teacher": {"model": str(folder), "parameters": n_t}, "student": {"parameters": n_s},
               "parameter_ratio": n_s / n_t}
    if teacher_test is not None and "test" in report:
        t_acc, s_acc = teacher_test["accuracy"], report["test"]["accuracy"]
        summary["teacher"].update(test_accuracy=t_acc, test_f1_macro=teacher_test.get("f1_macro"),
                                  test_source=teacher_test["source"])
        summary["student"].update(test_accuracy=s_acc, test_f1_macro=report["test"].get("f1_macro"))
        summary["accuracy_retained"] = s_acc / t_acc if t_acc else None
    texts = (data.test or data.val).texts[:cfg.speed_examples]
    if texts:
        summary["speed"] = _classify_speed(teacher, student, texts, bs)
        if teacher.config["max_length"] != ccfg.max_length:
            log(f"distill: the teacher reads {teacher.config['max_length']} tokens per text and the student "
                f"{ccfg.max_length}: the speed-up (and the accuracy) compare different truncations")
    report["distillation"] = summary
    _write(out / "report.json", report)
    speed = summary.get("speed", {})
    log(f"distill: student {n_s / 1e6:.2f}M vs teacher {n_t / 1e6:.2f}M parameters ({n_s / n_t:.1%})"
        + (f"; accuracy retained {summary['accuracy_retained']:.2%}" if summary.get("accuracy_retained") else "")
        + (f"; {speed['speedup']:.2f}x examples/s" if speed else ""))
    return report


def _classify_speed(teacher, student, texts: list[str], batch_size: int) -> dict:
    """Examples/s of both classifiers on the same texts (cleaning and tokenization included), alternating,
    best of two passes each, so that both see the same machine load."""
    best = {"teacher": math.inf, "student": math.inf}
    for _ in range(2):
        for name, clf in (("student", student), ("teacher", teacher)):
            t0 = time.perf_counter()
            clf.predict_proba(texts, batch_size=batch_size)
            best[name] = min(best[name], time.perf_counter() - t0)
    t, s = len(texts) / best["teacher"], len(texts) / best["student"]
    return {"examples": len(texts), "batch_size": batch_size, "threads": torch.get_num_threads(),
            "teacher_max_length": teacher.config["max_length"], "student_max_length": student.config["max_length"],
            "teacher_examples_per_s": t, "student_examples_per_s": s, "speedup": s / t}


# ------------------------------------------------------------------------------------------------ seq2seq
def _run_seq2seq(cfg: DistillConfig, folder: Path, tconf: dict, log) -> dict:
    from .data.parallel import load_parallel
    from .seq2seq import Seq2SeqConfig, _examples, _test_and_report, load_seq2seq, score
    from .tasks.seq2seq import Seq2SeqTask, prompt_prefix

    teacher = load_seq2seq(folder)
    if not isinstance(teacher.model, Transformer):
        raise ConfigError(f"{folder} is a {tconf.get('kind')} encoder-decoder: distillation needs a decoder teacher")
    scfg = _task_recipe(Seq2SeqConfig, cfg, folder, tconf, {"name": "decoder-distilled", "init_weights": "pretrained",
                                                            "pretrain": None},
                        {"kind": "decoder", "task": teacher.task})
    out = scfg.out_dir
    scfg.train.out_dir = str(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_parallel(scfg.data)
    log(f"data: {data.summary()}")
    if (data.src_lang, data.tgt_lang) != (teacher.config["src_lang"], teacher.config["tgt_lang"]):
        raise ConfigError(f"the data is {data.src_lang}->{data.tgt_lang} but the teacher was trained for "
                          f"{teacher.config['src_lang']}->{teacher.config['tgt_lang']}")
    tok, tmodel = teacher.tokenizer, teacher.model
    plan = plan_student(cfg.student, cfg.student_embedding, tmodel, tok, tmodel.cfg.block_size)
    student = plan.build(scfg.train.seed)
    block = min(student.cfg.block_size, tmodel.cfg.block_size)
    prefix = prompt_prefix(tok, scfg.task, data.src_lang, data.tgt_lang)
    train, train_rep = _examples(tok, data.train, prefix, scfg, block)
    val, _ = _examples(tok, data.val, prefix, scfg, block)
    log(f"tokens: train {train_rep}")
    inner = Seq2SeqTask(student, train, val, block_size=block, pad_id=tok.pad_id, seed=scfg.train.seed,
                        packing=scfg.packing)
    pairs = _pairs(cfg, plan, tmodel)
    task = DistillTask(inner, tmodel, _wrap(student, plan, pairs, tmodel), kind="seq2seq", cfg=cfg.distill,
                       pairs=pairs, log=log)
    _steps(scfg.train, scfg.epochs, inner.rows_per_epoch())
    n_t, n_s = count_parameters(tmodel), count_parameters(student)
    log(f"distill: teacher {n_t / 1e6:.2f}M parameters -> student {n_s / 1e6:.2f}M ({n_s / n_t:.1%}); "
        f"{plan.description}; {scfg.train.max_steps} steps")
    record = _record(cfg, folder, plan, pairs, n_t)
    run_config = {"task": scfg.task, "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  "model": to_dict(student.cfg), "src_lang": data.src_lang, "tgt_lang": data.tgt_lang,
                  "max_target_tokens": scfg.max_target_tokens, "source_head_fraction": scfg.source_head_fraction,
                  "max_source_tokens": scfg.max_source_tokens,
                  "decode": to_dict(scfg.decode), "recipe": to_dict(scfg), "backbone": tconf.get("backbone"),
                  "distill": record}
    flops = student.flops_per_token() + tmodel.flops_per_token() / 3  # + the teacher's forward pass
    trainer = Trainer(scfg.train, task, run_config=run_config, tokenizer=tok, flops_per_token=flops)
    result = trainer.fit()
    info = {"description": f"decoder distilled from {folder} ({plan.description}; alpha {cfg.distill.alpha}, "
                           f"T {cfg.distill.temperature}, beta {cfg.distill.beta}); loss on targets only",
            "parameters": n_s, "trainable_parameters": n_s, "train_seconds": round(result.train_seconds, 1),
            "steps": result.step, "best_step": result.best_step, "stopped_because": result.stopped_because,
            "train_examples": len(train), "model_dir": str(result.model_dir), "distill": record}
    if not trainer.dist.is_main:
        return info
    export_student(result.model_dir, tok)
    loaded = load_seq2seq(result.model_dir)
    tmodel.cpu()  # decoded on the CPU, as the student (and `finetune translate`)
    teacher_test = None
    if cfg.teacher_eval != "never":
        saved = _teacher_report(folder, data.test.name, len(data.test)) if cfg.teacher_eval == "auto" else None
        if saved is not None:
            teacher_test = {**saved["test"], "source": saved["source"]}
        else:
            log(f"distill: decoding {data.test.name} with the teacher ({len(data.test):,} examples)")
            teacher_test = {"source": "measured by this run"}
            for mode, beams in (("greedy", 1), ("beam", scfg.decode.num_beams)):
                if mode == "greedy" and not scfg.eval_greedy:
                    continue
                t0 = time.perf_counter()
                hyps = teacher.generate(data.test.sources, scfg.decode, num_beams=beams)
                seconds = time.perf_counter() - t0
                teacher_test[mode] = {**score(scfg.task, data.tgt_lang, hyps, data.test.references),
                                      "num_beams": beams, "sentences_per_s": len(data.test) / seconds}

    def predict(sources, beams):
        return loaded.generate(sources, scfg.decode, num_beams=beams, progress=scfg.train.progress)

    report = _test_and_report(scfg, out, data, predict, info, log)
    summary = {"teacher": {"model": str(folder), "parameters": n_t}, "student": {"parameters": n_s},
               "parameter_ratio": n_s / n_t}
    if teacher_test is not None:
        summary["teacher"]["test"] = teacher_test
        summary["student"]["test"] = report["test"]
        metric = "bleu" if scfg.task == "translate" else "rouge"
        for mode in ("greedy", "beam"):
            t, s = teacher_test.get(mode, {}).get(metric), report["test"].get(mode, {}).get(metric)
            if t and s:
                key = "score" if metric == "bleu" else "rougeL"
                summary[f"{metric}_{mode}"] = {"teacher": t[key], "student": s[key]}
                t_sps, s_sps = teacher_test[mode].get("sentences_per_s"), report["test"][mode]["sentences_per_s"]
                if t_sps and teacher_test["source"] == "measured by this run":
                    summary[f"speedup_{mode}"] = s_sps / t_sps
    report["distillation"] = summary
    _write(out / "report.json", report)
    return report


# ------------------------------------------------------------------------------------------------ lm
def _run_lm(cfg: DistillConfig, folder: Path, tconf: dict, log) -> dict:
    import numpy as np

    from .data.prepare import prepare
    from .model.io import load_model
    from .pretrain import PretrainConfig
    from .tasks.lm import LMTask, evaluate_tokens, token_byte_lengths
    from .train import distributed as dist_utils
    from .train.hardware import pick_device

    teacher = load_model(folder)
    tok, tmodel = teacher.tokenizer, teacher.model
    recipe = dict(cfg.task_recipe)
    base = {k: json.loads(json.dumps(tconf[k])) for k in ("data", "train", "final_eval") if k in tconf}
    t_out = Path((base.get("train") or {}).get("out_dir") or "runs/lm")
    name = recipe.pop("name", None) or f"{t_out.name}-distilled"
    base["train"] = {**(base.get("train") or {}), "out_dir": str(t_out.parent / name), "resume": False}
    merged = _deep_merge(base, recipe)
    merged.setdefault("data", {})
    given = (recipe.get("data") or {}).get("tokenizer")
    if given and Path(given).resolve() != folder.resolve():
        raise ConfigError(f"data.tokenizer {given}: the student uses the teacher's tokenizer ({folder})")
    merged["data"]["tokenizer"] = str(folder)
    plan = plan_student(cfg.student, cfg.student_embedding, tmodel, tok, tmodel.cfg.block_size)
    if plan.config.block_size > tmodel.cfg.block_size:
        raise ConfigError(f"the student's context {plan.config.block_size} exceeds the teacher's "
                          f"{tmodel.cfg.block_size}: the teacher could not score its windows")
    merged["model"] = to_dict(plan.config)
    merged.pop("model_preset", None)
    pcfg = from_dict(PretrainConfig, merged)
    out = Path(pcfg.train.out_dir)
    info = dist_utils.init(pick_device(pcfg.train.device))  # rank 0 prepares, the others wait (as pretrain)
    quiet = lambda *a, **k: None  # noqa: E731
    if info.is_main:
        data = prepare(pcfg.data, out / "data", progress=pcfg.train.progress, log=log)
    dist_utils.barrier(info)
    if not info.is_main:
        data = prepare(pcfg.data, out / "data", progress=False, log=quiet)
    if data.tokenizer.fingerprint != tok.fingerprint:
        raise _tokenizer_error(f"the data prepared in {out / 'data'}", data.tokenizer.fingerprint,
                               data.tokenizer.vocab_size, tok.fingerprint, tok.vocab_size)
    student = plan.build(pcfg.train.seed)
    inner = LMTask(student, data.train, data.val, block_size=student.cfg.block_size, seed=pcfg.train.seed,
                   sampling=pcfg.data.sampling, token_bytes=token_byte_lengths(tok))
    pairs = _pairs(cfg, plan, tmodel)
    task = DistillTask(inner, tmodel, _wrap(student, plan, pairs, tmodel), kind="lm", cfg=cfg.distill, pairs=pairs,
                       log=log)
    n_t, n_s = count_parameters(tmodel), count_parameters(student)
    log(f"distill: teacher {n_t / 1e6:.2f}M parameters -> student {n_s / 1e6:.2f}M ({n_s / n_t:.1%}); "
        f"{plan.description}")
    record = _record(cfg, folder, plan, pairs, n_t)
    run_config = {"task": "lm", "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  **to_dict(pcfg), "distill": record}
    flops = student.flops_per_token() + tmodel.flops_per_token() / 3
    trainer = Trainer(pcfg.train, task, run_config=run_config, tokenizer=tok, flops_per_token=flops)
    result = trainer.fit()
    report = {"task": "lm", "name": name, "out_dir": str(out), "model_dir": str(result.model_dir),
              "steps": result.step, "best_step": result.best_step, "stopped_because": result.stopped_because,
              "train_seconds": round(result.train_seconds, 1), "tokens_seen": trainer.tokens_seen,
              "last_eval": result.last_eval, "command": _command()}
    if not trainer.dist.is_main:
        return report
    export_student(result.model_dir, tok)
    best = load_model(result.model_dir).model
    lengths = torch.as_tensor(token_byte_lengths(tok))
    per_corpus = {}
    for corpus, shard in data.val_by_corpus.items():
        tokens = np.asarray(shard.tokens)
        per_corpus[corpus] = {"student": evaluate_tokens(best, tokens, lengths)}
        if cfg.teacher_eval != "never":
            per_corpus[corpus]["teacher"] = evaluate_tokens(tmodel, tokens, lengths)
        log(f"{corpus:>28}: " + "  ".join(f"{who} bpb {m.get('val_bpb', float('nan')):.4f}"
                                          for who, m in per_corpus[corpus].items()))
    report["validation_by_corpus"] = per_corpus
    report["distillation"] = {"teacher": {"model": str(folder), "parameters": n_t},
                              "student": {"parameters": n_s}, "parameter_ratio": n_s / n_t, **record}
    _write(out / "report.json", report)
    return report


def _command() -> str:
    from .stages import command_line

    return command_line()


# ------------------------------------------------------------------------------------------------ entry
def run(cfg: DistillConfig, log=print) -> dict:
    """Distil ``cfg.teacher`` into ``cfg.student``; returns report.json's content."""
    cfg.validate()
    folder = ckpt.resolve(cfg.teacher)
    tconf = ckpt.read_config(folder)
    task = teacher_task(tconf)
    if task not in TASKS:
        raise ConfigError(f"{folder} holds a '{task}' model; distillation supports {', '.join(TASKS)}")
    if cfg.task != "auto" and cfg.task != task:
        raise ConfigError(f"--task {cfg.task}, but the teacher {folder} is a '{task}' model: a student learns the "
                          f"teacher's own task")
    runner = {"lm": _run_lm, "classify": _run_classify, "translate": _run_seq2seq, "summarize": _run_seq2seq}[task]
    return runner(cfg, folder, tconf, log)


def add_distill_parser(subparsers) -> argparse.ArgumentParser:
    """``scratchlm distill``: add the verb to the CLI's subparsers."""
    sp = subparsers.add_parser(
        "distill", help="distil a trained teacher into a smaller student (soft targets, hidden states)",
        description="Knowledge distillation through the shared training loop. Dotted overrides change the "
                    "distillation (--distill.alpha 0.7) or the task recipe (--epochs 2, --train.lr 1e-3).")
    sp.add_argument("--config", help="distillation recipe (a path or a shipped recipe name, e.g. distill_imdb)")
    sp.add_argument("--teacher", help="the teacher's model folder (overrides the recipe's)")
    sp.add_argument("--student", help="a preset (scratchlm models), a model YAML, a model folder, or "
                                      "teacher-layers:0,2,5")
    sp.add_argument("--task", choices=list(TASKS), help="the teacher's task (default: read from its config.json)")
    sp.add_argument("--name", help="run name (folder under the recipe's out_root, name in the report)")
    sp.add_argument("--data-dir", help="folder with the named datasets (default $SCRATCHLM_DATA_DIR)")
    sp.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    sp.set_defaults(fn=cmd_distill)
    return sp


def cmd_distill(args, extra=()) -> int:
    from .cli import _overrides, _recipe

    defaults = {k: getattr(args, k) for k in ("teacher", "student", "task") if getattr(args, k, None)}
    overrides = _overrides(list(extra))
    if args.name:
        overrides.append(f"name={args.name}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.resume:
        overrides.append("train.resume=true")
    cfg = build_config(_recipe(args.config), overrides, defaults)
    report = run(cfg)
    if report.get("model_dir"):
        print(f"report: {Path(report['model_dir']).parent / 'report.json'}\nmodel: {report['model_dir']}")
    return 0
