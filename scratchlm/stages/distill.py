"""Knowledge distillation end to end: a trained teacher -> a smaller student of the same kind, through the
shared training loop: :class:`~scratchlm.tasks.distill.DistillTask` wraps the task the student's own stage
builds (pretraining, classification, translation/summarization), and that stage scores and reports it.

    scratchlm distill --config distill_imdb                            # the IMDb recipe (classification)
    scratchlm distill --teacher runs/imdb/decoder-full/model --student 1m
    scratchlm distill --teacher runs/tatoeba_en_zh/decoder/model --student teacher-layers:0,2,5
    scratchlm distill --teacher runs/imdb_lm/model --student student.yaml --task lm

The data, splits, preprocessing and training defaults are the teacher's own recipe (saved in its
config.json), so teacher and student are scored on the same test set; every other key of a distillation
recipe (or a dotted override: ``--epochs 3``, ``--train.lr 1e-3``, ``--data.max_train_examples 500``)
changes that recipe. The student (``scratchlm.stages.students``) is a preset, a model config, some of the
teacher's blocks or a model folder, with the teacher's tokenizer. Output: ``<out_root>/<name>/`` like any run
of the task (``model/`` loads like any model folder; resumable with ``--resume``) and ``report.json`` with the
task's metrics and a ``distillation`` section (teacher vs student parameters, test scores, throughput).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .. import __version__
from ..config import ConfigError, deep_merge, from_dict, load_recipe, to_dict
from ..data.labeled import assert_not_pretrained_on, load_labeled
from ..data.parallel import load_parallel
from ..data.prepare import prepare
from ..infer.classify import Classifier, load_classifier
from ..infer.seq2seq import load_seq2seq
from ..model import checkpoint as ckpt
from ..model.folder import load_decoder, read_model_config, task_of
from ..model.kinds import CLASSICAL_KINDS
from ..model.transformer import Transformer
from ..tasks.distill import DistillLossConfig, DistillStudent, DistillTask, layer_pairs, make_projections
from ..tasks.lm import LMTask, evaluate_tokens, token_byte_lengths
from ..train import distributed as dist_utils
from ..train.hardware import pick_device
from . import classify as classify_stage
from . import seq2seq as seq2seq_stage
from .base import (
    command_line,
    count_parameters,
    fit_and_report,
    global_batch,
    guard_run_folder,
    set_max_steps,
    write_json,
)
from .pretrain import PretrainConfig, main_process_first, quiet
from .students import StudentPlan, plan_student, tokenizer_error


@dataclass
class DistillConfig:
    task: Literal["auto", "lm", "classify", "translate", "summarize"] = "auto"  # auto: the teacher's
    teacher: str = ""  # the teacher (a model folder, <run>/model: its report.json is looked for in <run>)
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
    data = load_recipe(yaml_path, overrides, defaults)
    own = {k: data.pop(k) for k in OWN_KEYS if k in data}
    cfg = from_dict(DistillConfig, own)
    cfg.task_recipe = data
    return cfg


# ------------------------------------------------------------------------------------------------ shared
def _task_recipe(cls, cfg: DistillConfig, folder: Path, teacher_config: dict, defaults: dict, forced: dict):
    """The teacher's saved recipe, reset where a student differs (``defaults``), under the distillation
    recipe's task keys, with ``forced`` last."""
    saved = teacher_config.get("recipe")
    if not isinstance(saved, dict):
        raise ConfigError(f"{folder}/config.json records no recipe, so the teacher's data is unknown; train the "
                          f"teacher with `scratchlm finetune` (which saves it)")
    base = json.loads(json.dumps(saved))
    base["train"] = {**(base.get("train") or {}), "out_dir": "", "resume": False, "overwrite": False}
    base.update(defaults)
    merged = deep_merge(base, cfg.task_recipe)
    for key in forced:
        if key in cfg.task_recipe and cfg.task_recipe[key] != forced[key]:
            raise ConfigError(f"{key}: a distilled student is always {key}={forced[key]!r}")
    merged.update(forced)
    return from_dict(cls, merged)


@dataclass
class Distillation:
    """What every task's distillation shares: the teacher, the student's plan, the matched layers."""

    cfg: DistillConfig
    folder: Path  # the teacher's
    teacher: torch.nn.Module  # the teacher network the soft targets come from
    teacher_decoder: Transformer | None  # its decoder (None for a recurrent teacher)
    plan: StudentPlan
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (student layer, teacher layer) hidden states

    def __post_init__(self) -> None:
        if self.cfg.distill.beta <= 0:
            return
        if self.teacher_decoder is None:
            raise ConfigError("distill.beta > 0 (hidden-state matching) needs a decoder teacher")
        self.pairs = layer_pairs(self.cfg.distill.layers, self.plan.config.n_layer,
                                 self.teacher_decoder.cfg.n_layer, self.plan.copied_layers)

    def task(self, inner, student: torch.nn.Module, kind: str, log, **kw) -> DistillTask:
        """The student's own task ``inner``, wrapped: its loss gains the teacher's soft targets."""
        wrapped = DistillStudent(student) if not self.pairs else DistillStudent(
            student, make_projections(self.pairs, self.plan.config.n_embd, self.teacher_decoder.cfg.n_embd,
                                      self.plan.projection))
        return DistillTask(inner, self.teacher, wrapped, kind=kind, cfg=self.cfg.distill, pairs=self.pairs,
                           log=log, **kw)

    def record(self, n_teacher: int) -> dict:
        return {"teacher": str(self.folder), "teacher_parameters": n_teacher, "student": self.cfg.student,
                "student_init": self.plan.description, "loss": to_dict(self.cfg.distill),
                "layer_pairs": [list(p) for p in self.pairs]}

    def description(self, suffix: str = "") -> str:
        d = self.cfg.distill
        return (f"decoder distilled from {self.folder} ({self.plan.description}; alpha {d.alpha}, "
                f"T {d.temperature}, beta {d.beta}){suffix}")


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


def _comparison(folder: Path, n_teacher: int, n_student: int) -> dict:
    return {"teacher": {"model": str(folder), "parameters": n_teacher}, "student": {"parameters": n_student},
            "parameter_ratio": n_student / n_teacher}


def _log_sizes(log, n_teacher: int, n_student: int, plan: StudentPlan, steps: str = "") -> None:
    log(f"distill: teacher {n_teacher / 1e6:.2f}M parameters -> student {n_student / 1e6:.2f}M "
        f"({n_student / n_teacher:.1%}); {plan.description}{steps}")


# ------------------------------------------------------------------------------------------------ classify
def _run_classify(cfg: DistillConfig, folder: Path, teacher_config: dict, log) -> dict:
    teacher = load_classifier(folder)
    if teacher.kind in CLASSICAL_KINDS:
        raise ConfigError(f"{folder} is a {teacher.kind} classifier: distillation needs a neural teacher's logits")
    stage_cfg = _task_recipe(classify_stage.ClassifyConfig, cfg, folder, teacher_config,
                        {"name": "decoder-distilled", "method": "full", "init_weights": "pretrained",
                         "freeze_layers": 0, "pretrain": None},
                        {"kind": "decoder"})
    out = stage_cfg.out_dir
    stage_cfg.train.out_dir = str(out)
    guard_run_folder(stage_cfg.train, out, log)
    tok = teacher.tokenizer
    assert_not_pretrained_on(teacher_config.get("backbone") or {}, stage_cfg.data.dataset, stage_cfg.data.test_split)
    data = load_labeled(stage_cfg.data, log=log)
    log(f"data: {data.summary()}")
    if data.label_names != teacher.label_names:
        raise ConfigError(f"the data's labels {data.label_names} differ from the teacher's {teacher.label_names}")
    if not len(data.val):
        raise ConfigError("data.val_fraction is 0: distillation needs a validation set for model selection")
    rows = classify_stage.encode_data(stage_cfg, tok, data)
    teacher_decoder = teacher.model.backbone if teacher.kind == "decoder" else None
    plan = plan_student(cfg.student, cfg.student_embedding, teacher_decoder, tok,
                        teacher_decoder.cfg.block_size if teacher_decoder is not None else stage_cfg.max_length)
    if stage_cfg.max_length > plan.config.block_size:
        raise ConfigError(f"max_length {stage_cfg.max_length} exceeds the student's context {plan.config.block_size}")
    model = classify_stage.build_classifier(stage_cfg, tok, data.num_labels, data.label_names,
                                            plan.build(stage_cfg.train.seed))
    if plan.copied_layers is not None:
        model.head.score.load_state_dict(teacher.model.head.score.state_dict())
    distillation = Distillation(cfg, folder, teacher.model, teacher_decoder, plan)
    inner = classify_stage.make_task(stage_cfg, model, tok, data, rows)
    task = distillation.task(inner, model, "classify", log, class_weights=inner.class_weights,
                             label_smoothing=stage_cfg.label_smoothing)
    global_batch_size = global_batch(stage_cfg.train)
    set_max_steps(stage_cfg.train, stage_cfg.epochs, inner.steps_per_epoch(global_batch_size) * global_batch_size,
                  global_batch_size)
    n_teacher, n_student = count_parameters(teacher.model), count_parameters(model)
    _log_sizes(log, n_teacher, n_student, plan, f"; {stage_cfg.train.max_steps} steps of {global_batch_size} examples")
    record = distillation.record(n_teacher)
    run_config = {**classify_stage.folder_config(stage_cfg, model, tok, data),
                  "backbone": teacher_config.get("backbone"), "distill": record}
    flops = model.backbone.flops_per_token(int(rows.mean_length), lm_head=False)
    info = {"description": distillation.description(), "parameters": n_student, "trainable_parameters": n_student,
            "train_examples": len(rows.train_rows), "truncated_train_examples": rows.truncated, "distill": record}

    def report(info: dict, trainer) -> dict:
        export_student(Path(info["model_dir"]), tok)
        student = load_classifier(info["model_dir"])  # on the CPU, as `finetune classify` scores its models
        teacher.model.cpu()  # the loop may have moved it to the training device: both are timed on the same one
        bs = stage_cfg.eval_batch_size
        teacher_test = None
        if data.test is not None and cfg.teacher_eval != "never":
            saved = _teacher_report(folder, data.test.name, len(data.test)) if cfg.teacher_eval == "auto" else None
            if saved is not None:
                teacher_test = {**saved["test"], "source": saved["source"]}
            else:
                log(f"distill: scoring the teacher on {data.test.name} ({len(data.test):,} examples)")
                m, _, seconds = classify_stage.evaluate_split(teacher, data.test.texts, data.test.labels,
                                                              batch_size=bs, progress=stage_cfg.train.progress)
                teacher_test = {**m, "examples_per_s": len(data.test) / seconds, "source": "measured by this run"}
        result = classify_stage.report_classifier(stage_cfg, out, student, data, info, log)
        summary = _comparison(folder, n_teacher, n_student)
        if teacher_test is not None and "test" in result:
            t_acc, s_acc = teacher_test["accuracy"], result["test"]["accuracy"]
            summary["teacher"].update(test_accuracy=t_acc, test_f1_macro=teacher_test.get("f1_macro"),
                                      test_source=teacher_test["source"])
            summary["student"].update(test_accuracy=s_acc, test_f1_macro=result["test"].get("f1_macro"))
            summary["accuracy_retained"] = s_acc / t_acc if t_acc else None
        texts = (data.test or data.val).texts[:cfg.speed_examples]
        if texts:
            summary["speed"] = _classify_speed(teacher, student, texts, bs)
            if teacher.config["max_length"] != stage_cfg.max_length:
                log(f"distill: the teacher reads {teacher.config['max_length']} tokens per text and the student "
                    f"{stage_cfg.max_length}: the speed-up (and the accuracy) compare different truncations")
        result["distillation"] = summary
        write_json(out / "report.json", result)
        speed = summary.get("speed", {})
        log(f"distill: student {n_student / 1e6:.2f}M vs teacher {n_teacher / 1e6:.2f}M parameters "
            f"({n_student / n_teacher:.1%})"
            + (f"; accuracy retained {summary['accuracy_retained']:.2%}" if summary.get("accuracy_retained") else "")
            + (f"; {speed['speedup']:.2f}x examples/s" if speed else ""))
        return result

    return fit_and_report(stage_cfg.train, task, run_config=run_config, tokenizer=tok, info=info, report=report,
                          flops_per_token=flops)


def _classify_speed(teacher: Classifier, student: Classifier, texts: list[str], batch_size: int) -> dict:
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
def _run_seq2seq(cfg: DistillConfig, folder: Path, teacher_config: dict, log) -> dict:
    teacher = load_seq2seq(folder)
    if not isinstance(teacher.model, Transformer):
        raise ConfigError(f"{folder} is a {teacher_config.get('kind')} encoder-decoder: distillation needs a decoder "
                          f"teacher")
    stage_cfg = _task_recipe(seq2seq_stage.Seq2SeqConfig, cfg, folder, teacher_config,
                        {"name": "decoder-distilled", "init_weights": "pretrained", "pretrain": None},
                        {"kind": "decoder", "task": teacher.task})
    out = stage_cfg.out_dir
    stage_cfg.train.out_dir = str(out)
    guard_run_folder(stage_cfg.train, out, log)
    out.mkdir(parents=True, exist_ok=True)
    data = load_parallel(stage_cfg.data)
    log(f"data: {data.summary()}")
    if (data.src_lang, data.tgt_lang) != (teacher.config["src_lang"], teacher.config["tgt_lang"]):
        raise ConfigError(f"the data is {data.src_lang}->{data.tgt_lang} but the teacher was trained for "
                          f"{teacher.config['src_lang']}->{teacher.config['tgt_lang']}")
    tok, tmodel = teacher.tokenizer, teacher.model
    plan = plan_student(cfg.student, cfg.student_embedding, tmodel, tok, tmodel.cfg.block_size)
    student = plan.build(stage_cfg.train.seed)
    distillation = Distillation(cfg, folder, tmodel, tmodel, plan)
    # the student's rows fill its context (distillation does not take the teacher recipe's pack_length)
    inner = seq2seq_stage.make_task(stage_cfg, student, tok, data, min(student.cfg.block_size, tmodel.cfg.block_size),
                                    log, pack_length=None)
    task = distillation.task(inner, student, "seq2seq", log)
    set_max_steps(stage_cfg.train, stage_cfg.epochs, inner.rows_per_epoch(), global_batch(stage_cfg.train))
    n_teacher, n_student = count_parameters(tmodel), count_parameters(student)
    _log_sizes(log, n_teacher, n_student, plan, f"; {stage_cfg.train.max_steps} steps")
    record = distillation.record(n_teacher)
    run_config = {**seq2seq_stage.folder_config(stage_cfg, student, tok, data),
                  "backbone": teacher_config.get("backbone"), "distill": record}
    flops = student.flops_per_token() + tmodel.flops_per_token() / 3  # + the teacher's forward pass
    info = {"description": distillation.description("; loss on targets only"), "parameters": n_student,
            "trainable_parameters": n_student, "train_examples": len(inner.train), "distill": record}

    def report(info: dict, trainer) -> dict:
        export_student(Path(info["model_dir"]), tok)
        loaded = load_seq2seq(info["model_dir"])
        tmodel.cpu()  # decoded on the CPU, as the student (and `finetune translate`)
        teacher_test = None
        if cfg.teacher_eval != "never":
            saved = _teacher_report(folder, data.test.name, len(data.test)) if cfg.teacher_eval == "auto" else None
            if saved is not None:
                teacher_test = {**saved["test"], "source": saved["source"]}
            else:
                log(f"distill: decoding {data.test.name} with the teacher ({len(data.test):,} examples)")
                teacher_test = {"source": "measured by this run"}
                for mode, beams in (("greedy", 1), ("beam", stage_cfg.decode.num_beams)):
                    if mode == "greedy" and not stage_cfg.eval_greedy:
                        continue
                    t0 = time.perf_counter()
                    hyps = teacher.generate(data.test.sources, stage_cfg.decode, num_beams=beams)
                    seconds = time.perf_counter() - t0
                    scores = seq2seq_stage.score(stage_cfg.task, data.tgt_lang, hyps, data.test.references)
                    teacher_test[mode] = {**scores, "num_beams": beams, "sentences_per_s": len(data.test) / seconds}
        predict = seq2seq_stage.predictor(loaded, stage_cfg.decode, stage_cfg.train.progress)
        result = seq2seq_stage.report_seq2seq(stage_cfg, out, data, predict, info, log)
        summary = _comparison(folder, n_teacher, n_student)
        if teacher_test is not None:
            summary["teacher"]["test"] = teacher_test
            summary["student"]["test"] = result["test"]
            metric = "bleu" if stage_cfg.task == "translate" else "rouge"
            for mode in ("greedy", "beam"):
                t, s = teacher_test.get(mode, {}).get(metric), result["test"].get(mode, {}).get(metric)
                if t and s:
                    key = "score" if metric == "bleu" else "rougeL"
                    summary[f"{metric}_{mode}"] = {"teacher": t[key], "student": s[key]}
                    t_sps, s_sps = teacher_test[mode].get("sentences_per_s"), result["test"][mode]["sentences_per_s"]
                    if t_sps and teacher_test["source"] == "measured by this run":
                        summary[f"speedup_{mode}"] = s_sps / t_sps
        result["distillation"] = summary
        write_json(out / "report.json", result)
        return result

    return fit_and_report(stage_cfg.train, task, run_config=run_config, tokenizer=tok, info=info, report=report,
                          flops_per_token=flops)


# ------------------------------------------------------------------------------------------------ lm
def _run_lm(cfg: DistillConfig, folder: Path, teacher_config: dict, log) -> dict:
    teacher = load_decoder(folder)
    tok, tmodel = teacher.tokenizer, teacher.model
    recipe = dict(cfg.task_recipe)
    base = {k: json.loads(json.dumps(teacher_config[k])) for k in ("data", "train", "final_eval")
            if k in teacher_config}
    t_out = Path((base.get("train") or {}).get("out_dir") or "runs/lm")
    name = recipe.pop("name", None) or f"{t_out.name}-distilled"
    base["train"] = {**(base.get("train") or {}), "out_dir": str(t_out.parent / name), "resume": False,
                     "overwrite": False}
    merged = deep_merge(base, recipe)
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
    stage_cfg = from_dict(PretrainConfig, merged)
    out = Path(stage_cfg.train.out_dir)
    guard_run_folder(stage_cfg.train, out, log)
    info = dist_utils.init(pick_device(stage_cfg.train.device))  # rank 0 prepares, the others wait (as pretrain)
    data = main_process_first(info, lambda main: prepare(stage_cfg.data, out / "data",
                                                         progress=stage_cfg.train.progress and main,
                                                         log=log if main else quiet))
    if data.tokenizer.fingerprint != tok.fingerprint:
        raise tokenizer_error(f"the data prepared in {out / 'data'}", data.tokenizer.fingerprint,
                              data.tokenizer.vocab_size, tok.fingerprint, tok.vocab_size)
    student = plan.build(stage_cfg.train.seed)
    inner = LMTask(student, data.train, data.val, block_size=student.cfg.block_size, seed=stage_cfg.train.seed,
                   sampling=stage_cfg.data.sampling, token_bytes=token_byte_lengths(tok))
    distillation = Distillation(cfg, folder, tmodel, tmodel, plan)
    task = distillation.task(inner, student, "lm", log)
    n_teacher, n_student = count_parameters(tmodel), count_parameters(student)
    _log_sizes(log, n_teacher, n_student, plan)
    record = distillation.record(n_teacher)
    run_config = {"task": "lm", "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  **to_dict(stage_cfg), "distill": record}
    flops = student.flops_per_token() + tmodel.flops_per_token() / 3

    def report(info: dict, trainer) -> dict:
        export_student(Path(info["model_dir"]), tok)
        best = load_decoder(info["model_dir"]).model
        lengths = torch.as_tensor(token_byte_lengths(tok))
        per_corpus = {}
        for corpus, shard in data.val_by_corpus.items():
            tokens = np.asarray(shard.tokens)
            per_corpus[corpus] = {"student": evaluate_tokens(best, tokens, lengths)}
            if cfg.teacher_eval != "never":
                per_corpus[corpus]["teacher"] = evaluate_tokens(tmodel, tokens, lengths)
            log(f"{corpus:>28}: " + "  ".join(f"{who} bpb {m.get('val_bpb', float('nan')):.4f}"
                                              for who, m in per_corpus[corpus].items()))
        result = {**info, "tokens_seen": trainer.tokens_seen, "last_eval": trainer.last_eval,
                  "validation_by_corpus": per_corpus,
                  "distillation": {**_comparison(folder, n_teacher, n_student), **record}}
        write_json(out / "report.json", result)
        return result

    return fit_and_report(stage_cfg.train, task, run_config=run_config, tokenizer=tok, report=report,
                          flops_per_token=flops,
                          info={"task": "lm", "name": name, "out_dir": str(out), "command": command_line()})


# ------------------------------------------------------------------------------------------------ entry
RUNNERS = {"lm": _run_lm, "classify": _run_classify, "translate": _run_seq2seq, "summarize": _run_seq2seq}


def run(cfg: DistillConfig, log=print) -> dict:
    """Distil ``cfg.teacher`` into ``cfg.student``; returns report.json's content."""
    cfg.validate()
    folder, teacher_config = read_model_config(cfg.teacher)
    task = task_of(teacher_config, folder)
    if cfg.task != "auto" and cfg.task != task:
        raise ConfigError(f"--task {cfg.task}, but the teacher {folder} is a '{task}' model: a student learns the "
                          f"teacher's own task")
    return RUNNERS[task](cfg, folder, teacher_config, log)
