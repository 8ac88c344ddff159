"""Text classification end to end: fine-tune (decoder, full or LoRA), the baselines, prediction, evaluation.

One recipe section (``data``) feeds every model of a task, so the decoder, its from-scratch ablation, the
RNN/LSTM/GRU baselines and the two logistic regressions see the same rows, splits and metrics:

    scratchlm finetune classify --config imdb                 # the pretrained decoder, full fine-tuning
    scratchlm finetune classify --config imdb --method lora   # LoRA adapters (PEFT layout), merged on export
    scratchlm baseline lstm --config imdb                     # rnn | lstm | gru: the shared training loop
    scratchlm baseline bow --config imdb                      # CountVectorizer() + LogisticRegression()
    scratchlm report runs/imdb                                # one page comparing all of them

Every run writes ``<out_root>/<name>/``: ``model/`` (weights, config.json with the label names, tokenizer),
``report.json`` (validation and test metrics, parameters, training time, latency), ``metrics.jsonl`` and
the test confusion matrix as a PNG. The test split is read once, after training and model selection.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .. import __version__
from ..baselines.classical import ClassicalConfig, fit_classical
from ..baselines.rnn import RNNClassifier, RNNConfig
from ..config import ConfigError, from_dict, to_dict
from ..data.labeled import (
    LabeledData,
    LabeledDataConfig,
    LabeledSplit,
    LabelError,
    assert_not_pretrained_on,
    encode_labels,
    load_labeled,
    read_split,
)
from ..data.registry import DATASETS
from ..data.sources import _describe
from ..infer.classify import Classifier, load_classifier
from ..model import checkpoint as ckpt
from ..model.folder import load_decoder
from ..model.heads import POOLINGS, SequenceClassifier
from ..model.kinds import CLASSICAL_KINDS, RECURRENT_CLASSIFIER_KINDS
from ..model.lora import LoraConfig, inject_lora, lora_modules, merge_lora, save_adapter
from ..model.transformer import Transformer
from ..tasks.classify import ClassifyTask, balanced_weights, encode_texts
from ..tasks.metrics import classification_metrics, plot_confusion_matrix
from ..tokenizer import Tokenizer
from ..train.config import TrainConfig
from .base import (
    StageConfig,
    count_parameters,
    finetune_train,
    fit_and_report,
    global_batch,
    guard_run_folder,
    report_header,
    set_max_steps,
    stage_recipe,
    write_json,
)
from .pretrain import ensure_pretrained

NEURAL_KINDS = ("decoder", *RECURRENT_CLASSIFIER_KINDS)


def _default_train() -> TrainConfig:
    return finetune_train(lr=1e-4, best_metric="val_f1", best_mode="max")


@dataclass
class ClassifyConfig(StageConfig):
    name: str = "decoder-full"
    out_root: str = "runs/classify"
    kind: Literal["decoder", "rnn", "lstm", "gru", "bow", "tfidf"] = "decoder"
    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    max_length: int = 512  # tokens per example, <|eos|> on both sides included; longer texts: head + tail
    head_fraction: float = 0.25  # share of a truncated text's budget taken from its start
    epochs: float | None = 3.0
    # decoder head
    pooling: str = "last"  # last (the final <|eos|>, as HF LlamaForSequenceClassification) | mean
    head_dropout: float = 0.1
    method: Literal["full", "lora"] = "full"
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                                task_type="SEQ_CLS"))
    freeze_layers: int = 0  # freeze the embedding and the first N blocks
    class_weights: str | list[float] | None = None  # None | "balanced" | one weight per class
    label_smoothing: float = 0.0
    rnn: RNNConfig = field(default_factory=RNNConfig)  # for kind rnn/lstm/gru (cell follows kind)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)  # for kind bow/tfidf
    eval_batch_size: int = 32
    train: TrainConfig = field(default_factory=_default_train)

    def validate(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling: {self.pooling!r} is not one of {list(POOLINGS)}")
        if not 0.0 <= self.head_fraction <= 1.0:
            raise ConfigError(f"head_fraction must be in [0, 1], got {self.head_fraction}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            raise ConfigError(f"class_weights: {self.class_weights!r}; use null, 'balanced' or a list")
        if self.kind in NEURAL_KINDS and not self.init:
            raise ConfigError("init: a pretrained model folder is needed (its tokenizer, and for the decoder its "
                              "weights or, with init_weights=random, its architecture)")


def _sections(recipe: dict) -> list[str]:
    """The ``by_kind`` sections a run applies: its kind, "recurrent" for rnn/lstm/gru, "lora" for the decoder
    with method lora (e.g. ``by_kind: {recurrent: {train: {lr: 2e-3}}, lora: {...}, bow: {...}}``)."""
    kind = recipe.get("kind", "decoder")
    keys = ["recurrent", kind] if kind in RECURRENT_CLASSIFIER_KINDS else [kind]
    if kind == "decoder" and recipe.get("method") == "lora":
        keys.append("lora")
    return keys


def build_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                 defaults: dict | None = None) -> ClassifyConfig:
    """Defaults <- YAML recipe <- ``defaults`` (e.g. what a CLI verb sets) <- ``key=value`` overrides, then
    the recipe's ``by_kind`` section for this run's kind."""
    cfg = stage_recipe(ClassifyConfig, yaml_path, overrides, defaults, default_train=_default_train(),
                       sections=_sections)
    if cfg.kind in RECURRENT_CLASSIFIER_KINDS:
        cfg.rnn.cell = cfg.kind
    if cfg.kind in CLASSICAL_KINDS:
        cfg.classical.kind = cfg.kind
    return cfg


# ------------------------------------------------------------------------------------------------ models
def build_classifier(cfg: ClassifyConfig, tokenizer: Tokenizer, num_labels: int, label_names: list[str],
                     backbone: Transformer | None) -> torch.nn.Module:
    torch.manual_seed(cfg.train.seed)
    if cfg.kind == "decoder":
        assert backbone is not None
        if cfg.init_weights == "random":
            backbone = Transformer(backbone.cfg)  # same architecture, fresh weights
        if cfg.dropout is not None:
            backbone.set_dropout(cfg.dropout)
        model = SequenceClassifier(backbone, num_labels, pooling=cfg.pooling, dropout=cfg.head_dropout,
                                   pad_id=tokenizer.pad_id, label_names=label_names)
        if cfg.freeze_layers:
            model.freeze_layers(cfg.freeze_layers)
        if cfg.method == "lora":
            lora = cfg.lora
            lora.task_type = "SEQ_CLS"
            lora.validate()
            inject_lora(model, lora)  # freezes everything but the adapters and modules_to_save (the head)
        return model
    rnn = cfg.rnn
    rnn.cell = cfg.kind
    rnn.vocab_size = tokenizer.vocab_size
    rnn.pad_id = tokenizer.pad_id
    rnn.validate()
    return RNNClassifier(rnn, num_labels, label_names)


def class_weights(cfg: ClassifyConfig, data: LabeledData):
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "balanced":
        return balanced_weights(data.train.labels, data.num_labels)
    w = np.asarray(cfg.class_weights, dtype=np.float64)
    if w.shape != (data.num_labels,):
        raise ConfigError(f"class_weights has {w.size} values for {data.num_labels} classes {data.label_names}")
    return w * len(data.train) / float((w[data.train.labels]).sum())  # mean weight over the rows = 1


def model_config(model: torch.nn.Module) -> dict:
    """What config.json records to rebuild ``model``."""
    if isinstance(model, SequenceClassifier):
        return {"kind": "decoder", "model": to_dict(model.backbone.cfg), "classifier": model.config_dict()}
    return {"kind": model.cfg.cell, **model.config_dict()}


def folder_config(cfg: ClassifyConfig, model: torch.nn.Module, tok: Tokenizer, data: LabeledData) -> dict:
    """config.json of a classifier folder (the caller adds where its backbone came from)."""
    return {"task": "classify", "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
            **model_config(model), "label_names": data.label_names, "label_values": data.label_values,
            "max_length": cfg.max_length, "head_fraction": cfg.head_fraction,
            "clean": to_dict(cfg.data.clean), "recipe": to_dict(cfg)}


# ------------------------------------------------------------------------------------------------ the task
@dataclass
class EncodedData:
    train_rows: list[np.ndarray]
    val_rows: list[np.ndarray]
    truncated: int  # training examples cut to max_length

    @property
    def mean_length(self) -> float:
        return float(np.mean([len(r) for r in self.train_rows]))


def encode_data(cfg: ClassifyConfig, tok: Tokenizer, data: LabeledData) -> EncodedData:
    train_rows, cut = encode_texts(tok, data.train.texts, cfg.max_length, cfg.head_fraction)
    val_rows, _ = encode_texts(tok, data.val.texts, cfg.max_length, cfg.head_fraction)
    return EncodedData(train_rows, val_rows, cut)


def make_task(cfg: ClassifyConfig, model: torch.nn.Module, tok: Tokenizer, data: LabeledData,
              rows: EncodedData) -> ClassifyTask:
    return ClassifyTask(model, rows.train_rows, data.train.labels, rows.val_rows, data.val.labels,
                        num_labels=data.num_labels, pad_id=tok.pad_id, seed=cfg.train.seed,
                        class_weights=class_weights(cfg, data), label_smoothing=cfg.label_smoothing,
                        eval_batch_size=cfg.eval_batch_size)


# ------------------------------------------------------------------------------------------------ scoring
def evaluate_split(clf: Classifier, texts: list[str], labels: np.ndarray, *, batch_size: int = 32,
                   progress: bool = False) -> tuple[dict, np.ndarray, float]:
    """(metrics, probabilities, seconds) of ``clf`` on one labelled split. With ``progress``, the metrics also
    carry the pass's throughput (``speed``: tokens/s, forward GFLOP/s and MFU against the measured matmul peak)."""
    t0 = time.perf_counter()
    stats: dict = {}
    probs = clf.predict_proba(texts, batch_size=batch_size, progress=progress, stats=stats)
    seconds = time.perf_counter() - t0
    k = len(clf.label_names)
    m = classification_metrics(labels, probs.argmax(1), list(range(k)), clf.label_names,
                               y_score=probs[:, 1] if k == 2 else None)
    if progress and "forward_gflops_per_s" in stats:
        import torch

        from ..train.hardware import measure_matmul_peak

        peak = measure_matmul_peak(torch.device("cpu"), torch.float32)
        m["speed"] = {"tokens_per_s": round(stats["tokens_per_s"], 1),
                      "forward_gflops_per_s": round(stats["forward_gflops_per_s"], 2),
                      "mfu": round(stats["forward_gflops_per_s"] * 1e9 / peak, 4)}
    return m, probs, seconds


def report_classifier(cfg: ClassifyConfig, out: Path, clf: Classifier, data: LabeledData, info: dict,
                      log) -> dict:
    """Validation and (once) test metrics of the saved model, the confusion PNG, report.json."""
    bs = cfg.eval_batch_size
    report = {**report_header("classify", cfg.data.dataset, cfg.name, cfg.kind), **info, "data": data.summary()}
    if len(data.val):
        report["val"], _, _ = evaluate_split(clf, data.val.texts, data.val.labels, batch_size=bs)
        report["val_split"] = data.val.name
    if data.test is not None:
        test_m, probs, seconds = evaluate_split(clf, data.test.texts, data.test.labels, batch_size=bs,
                                                progress=cfg.train.progress)
        report.update(test=test_m, test_split=data.test.name,
                      latency_ms_per_example=1000.0 * seconds / len(data.test),
                      examples_per_s=len(data.test) / seconds)
        np.save(out / "test_probs.npy", probs)
        try:
            plot_confusion_matrix(test_m["confusion_matrix"], clf.label_names, out / "confusion_test.png",
                                  title=f"{cfg.name} on {data.test.name}")
            report["confusion_png"] = "confusion_test.png"
        except ImportError as e:
            log(f"confusion matrix picture skipped: {e}")
        log(f"{cfg.name}: test accuracy {test_m['accuracy']:.4f}, macro F1 {test_m['f1_macro']:.4f}"
            + (f", ROC-AUC {test_m['roc_auc']:.4f}" if test_m.get("roc_auc") is not None else "")
            + f" on {len(data.test):,} examples ({data.test.name}); "
              f"{report['latency_ms_per_example']:.2f} ms/example")
    write_json(out / "report.json", report)
    return report


# ------------------------------------------------------------------------------------------------ running
def run(cfg: ClassifyConfig, log=print) -> dict:
    """Train one classifier of the recipe (``cfg.kind``) and report it; returns report.json's content."""
    cfg.validate()
    guard_run_folder(cfg.train, cfg.out_dir, log)
    if cfg.kind in CLASSICAL_KINDS:
        return run_classical(cfg, log)
    out = cfg.out_dir
    cfg.train.out_dir = str(out)
    ensure_pretrained(cfg.init, cfg.pretrain, cfg.pretrain_overrides, cfg.data.data_dir, log,
                      progress=cfg.train.progress)
    pretrained = load_decoder(cfg.init)
    assert_not_pretrained_on(pretrained.config, cfg.data.dataset, cfg.data.test_split)
    tok = pretrained.tokenizer
    data = load_labeled(cfg.data, log=log)
    log(f"data: {data.summary()}")
    if len(data.val) == 0:
        raise ConfigError("data.val_fraction is 0: a neural model needs a validation set for early stopping and "
                          "model selection")
    rows = encode_data(cfg, tok, data)
    log(f"tokens: {rows.mean_length:.0f} per training example on average; {rows.truncated:,} of "
        f"{len(rows.train_rows):,} longer than {cfg.max_length} tokens, cut to head + tail")
    if cfg.kind == "decoder" and cfg.max_length > pretrained.model.cfg.block_size:
        raise ConfigError(f"max_length {cfg.max_length} exceeds the pretrained context of "
                          f"{pretrained.model.cfg.block_size} tokens")
    model = build_classifier(cfg, tok, data.num_labels, data.label_names,
                             pretrained.model if cfg.kind == "decoder" else None)
    task = make_task(cfg, model, tok, data, rows)
    global_batch_size = global_batch(cfg.train)
    set_max_steps(cfg.train, cfg.epochs, task.steps_per_epoch(global_batch_size))
    n_total, n_train = count_parameters(model), count_parameters(model, trainable=True)
    n_rows = len(rows.train_rows)
    log(f"model: {cfg.kind}{' (' + cfg.method + ')' if cfg.kind == 'decoder' else ''}, "
        f"{n_total / 1e6:.2f}M parameters, {n_train / 1e6:.3f}M trainable; {cfg.train.max_steps} steps of "
        f"{global_batch_size} examples ({cfg.train.max_steps * global_batch_size / max(1, n_rows):.2f} epochs of "
        f"{n_rows:,})")
    run_config = {**folder_config(cfg, model, tok, data),
                  "backbone": {"folder": str(pretrained.folder), "data": pretrained.config.get("data")}}
    # the classifier never runs the lm_head; attention at the mean example length
    flops = (pretrained.model.flops_per_token(int(rows.mean_length), lm_head=False) if cfg.kind == "decoder"
             else None)

    def report(info: dict, trainer) -> dict:
        if cfg.kind == "decoder" and cfg.method == "lora":
            _export_lora(model, cfg, Path(info["model_dir"]), run_config, tok, log)
        return report_classifier(cfg, out, load_classifier(info["model_dir"]), data, info, log)

    info = {"description": describe_run(cfg), "parameters": n_total, "trainable_parameters": n_train,
            "train_examples": len(rows.train_rows), "truncated_train_examples": rows.truncated}
    return fit_and_report(cfg.train, task, run_config=run_config, tokenizer=tok, info=info, report=report,
                          flops_per_token=flops)


def _export_lora(model, cfg: ClassifyConfig, model_dir: Path, run_config: dict, tok, log) -> None:
    """The exported best weights carry the adapters: save them in the PEFT layout, then merge."""
    tensors = ckpt.load_tensors(model_dir)
    ckpt.load_model_weights(model, tensors, str(model_dir))
    adapter_dir = model_dir.parent / "adapter"
    save_adapter(model, cfg.lora, adapter_dir)
    n_adapters = len(lora_modules(model))
    merge_lora(model)
    cfg_out = {**run_config, **model_config(model), "lora": {"merged": True, "adapter": str(adapter_dir),
                                                            "modules": n_adapters}}
    ckpt.save_checkpoint(model_dir, model_tensors=ckpt.model_state(model), config=cfg_out, tokenizer=tok,
                         extra_files={"source.json": json.loads((model_dir / "source.json").read_text("utf-8"))})
    log(f"LoRA: {n_adapters} adapters saved in {adapter_dir} (PEFT layout); merged weights in {model_dir}")


def describe_run(cfg: ClassifyConfig) -> str:
    if cfg.kind == "decoder":
        how = "LoRA" if cfg.method == "lora" else "full fine-tuning"
        start = "random initialization" if cfg.init_weights == "random" else "pretrained"
        return f"decoder ({start}), {how}, {cfg.pooling} pooling, {cfg.max_length} tokens head+tail"
    if cfg.kind in CLASSICAL_KINDS:
        c = cfg.classical
        text = ("CountVectorizer() + LogisticRegression(), sklearn defaults" if cfg.kind == "bow" else
                "TfidfVectorizer(1-2-grams, sublinear tf, min_df 2) + LogisticRegression(C=30)")
        extras = [f"{k}={v}" for k, v in (("C", c.C), ("max_iter", c.max_iter), ("ngram_max", c.ngram_max))
                  if v is not None]
        extras += [x for x, on in (("stopwords removed", c.stopwords), ("POS-tag features", c.pos_tags)) if on]
        if c.segment == "jieba" or (c.segment == "auto" and c.language == "zh"):
            extras.append("jieba word segmentation")
        return text + (f" ({', '.join(extras)})" if extras else "")
    r = cfg.rnn
    return (f"{'bi' if r.bidirectional else ''}{cfg.kind.upper()} {r.num_layers}x{r.hidden_size}, "
            f"{r.pooling} pooling, BPE tokens")


def run_classical(cfg: ClassifyConfig, log=print) -> dict:
    """Fit a logistic-regression baseline on the same rows the neural models train on."""
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = load_labeled(cfg.data, log=log)
    log(f"data: {data.summary()}")
    classical = cfg.classical
    classical.kind = cfg.kind
    t0 = time.perf_counter()
    model = fit_classical(classical, data.train.texts, data.train.labels)
    seconds = time.perf_counter() - t0
    model_dir = out / "model"
    model.save(model_dir)
    config = {"task": "classify", "kind": cfg.kind, "scratchlm_version": __version__,
              "label_names": data.label_names, "label_values": data.label_values, "recipe": to_dict(cfg)}
    ckpt.write_json_atomic(model_dir / "config.json", config)
    write_json(out / "config.json", config)
    info = {"description": describe_run(cfg), "parameters": int(model.num_parameters),
            "trainable_parameters": int(model.num_parameters), "train_seconds": round(seconds, 1),
            "train_examples": len(data.train), "vocabulary_size": int(model.vocabulary_size),
            "model_dir": str(model_dir)}
    return report_classifier(cfg, out, load_classifier(model_dir), data, info, log)


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate_model(model_dir: str | Path, dataset: str, split: str, *, text_column: str | None = None,
                   label_column: str | None = None, data_dir: str | None = None, batch_size: int = 32,
                   out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Metrics of a saved classifier on any labelled split; writes metrics JSON and a confusion PNG."""
    clf = load_classifier(model_dir)
    carved = _recipe_carve(clf, dataset, split, data_dir)
    if carved is not None:  # e.g. sms_spam:test, a seeded carve of the single file: the recipe's own rows
        texts, labels = carved.texts, carved.labels
    else:
        data_cfg = LabeledDataConfig(dataset=dataset, train_split=split, test_split=None, text_column=text_column,
                                     label_column=label_column, data_dir=data_dir, test_fraction=0.1)
        texts, raw, origins = read_split(data_cfg, split)
        values = clf.config.get("label_values") or list(range(len(clf.label_names)))
        where = _describe(dataset, split)
        try:
            labels = encode_labels(raw, values, clf.label_names, where, origins)
        except LabelError as e:
            raise LabelError(f"{e}. The model {clf.folder} was trained with labels {clf.label_names}: the label "
                             f"set of the data differs from the checkpoint's") from None
    spec = DATASETS.get(dataset)
    if spec is not None and spec.label_names and list(spec.label_names) != clf.label_names \
            and clf.config.get("recipe", {}).get("data", {}).get("dataset") != dataset:
        raise LabelError(f"{where} has labels {list(spec.label_names)} but the model {clf.folder} predicts "
                         f"{clf.label_names}: the label sets differ")
    m, probs, seconds = evaluate_split(clf, texts, labels, batch_size=batch_size, progress=progress)
    m["dataset"], m["split"], m["model"] = dataset, split, str(clf.folder)
    m["latency_ms_per_example"] = 1000.0 * seconds / len(texts)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{Path(dataset).stem}_{split}.json").write_text(json.dumps(m, indent=2) + "\n", "utf-8")
        try:
            m["confusion_png"] = str(plot_confusion_matrix(m["confusion_matrix"], clf.label_names,
                                                           out / f"confusion_{Path(dataset).stem}_{split}.png",
                                                           title=f"{dataset}:{split}"))
        except ImportError as e:
            m["confusion_png"] = f"skipped: {e}"
    return m


def _recipe_carve(clf: Classifier, dataset: str, split: str, data_dir: str | None) -> LabeledSplit | None:
    """The ``test`` or ``validation`` rows the model's recipe carved from ``dataset`` with its seed, when the
    dataset has no such split of its own (SMS spam is one file): what its report scored, so a published card can
    be re-scored. None when the split exists in the dataset or the recipe did not carve it."""
    spec = DATASETS.get(dataset)
    recipe = (clf.config.get("recipe") or {}).get("data") or {}
    if spec is None or split in spec.splits or recipe.get("dataset") != dataset:
        return None
    cfg = from_dict(LabeledDataConfig, {**recipe, **({"data_dir": data_dir} if data_dir else {})}, "data")
    if split == "test" and cfg.test_split is None:
        part = "test"
    elif split == "validation" and cfg.val_split is None and cfg.val_fraction > 0:
        part = "val"
    else:
        return None
    data = load_labeled(cfg, log=lambda *a, **k: None)
    if data.label_names != clf.label_names:
        raise LabelError(f"{dataset}: the recipe's labels {data.label_names} differ from the model's "
                         f"{clf.label_names}")
    return getattr(data, part)


def format_metrics(m: dict) -> str:
    """A printable summary: headline numbers, per-class report, confusion matrix."""
    names = m["label_names"]
    lines = [f"{m.get('dataset', '')}:{m.get('split', '')}  n={m['n']:,}",
             f"accuracy {m['accuracy']:.4f}   macro precision {m['precision_macro']:.4f}   "
             f"macro recall {m['recall_macro']:.4f}   macro F1 {m['f1_macro']:.4f}"
             + (f"   ROC-AUC {m['roc_auc']:.4f}" if m.get("roc_auc") is not None else ""), "",
             f"{'class':>16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for n in names:
        r = m["report"][n]
        lines.append(f"{n:>16} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1-score']:9.4f} {int(r['support']):9d}")
    width = max(8, *(len(n) for n in names)) + 1
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              " " * width + "".join(f"{n:>{width}}" for n in names)]
    for n, row in zip(names, m["confusion_matrix"]):
        lines.append(f"{n:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    if m.get("speed"):
        sp = m["speed"]
        lines += ["", f"pass: {sp['tokens_per_s']:,.0f} tokens/s, {sp['forward_gflops_per_s']:.1f} GFLOP/s forward, "
                      f"MFU {100 * sp['mfu']:.1f}% of the measured fp32 matmul peak"]
    return "\n".join(lines)
