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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from . import __version__
from .baselines.classical import ClassicalConfig, ClassicalModel, fit_classical
from .config import ConfigError, _deep_merge, apply_overrides, from_dict, load_yaml, parse_override, to_dict
from .data.labeled import (
    LabeledData,
    LabeledDataConfig,
    LabelError,
    assert_not_pretrained_on,
    encode_labels,
    load_labeled,
    read_split,
)
from .data.sources import _describe
from .model.heads import POOLINGS, SequenceClassifier
from .model.io import check_tokenizer, load_model, model_config_from_dict
from .model.lora import LoraConfig, inject_lora, lora_modules, merge_lora, save_adapter
from .model.rnn import RNNClassifier, RNNConfig
from .model.transformer import Transformer
from .stages import command_line, count_parameters, ensure_pretrained
from .tasks.classify import ClassifyTask, balanced_weights, encode_texts, predict_proba
from .tasks.metrics import classification_metrics, plot_confusion_matrix
from .tokenizer import Tokenizer
from .train import checkpoint as ckpt
from .train.config import TrainConfig
from .train.trainer import Trainer

NEURAL_KINDS = ("decoder", "rnn", "lstm", "gru")
CLASSICAL_KINDS = ("bow", "tfidf")
KINDS = NEURAL_KINDS + CLASSICAL_KINDS


def _default_train() -> TrainConfig:
    return TrainConfig(out_dir="", max_steps=100000, lr=1e-4, min_lr_ratio=0.0, warmup_steps=50,
                       schedule="linear", weight_decay=0.01, micro_batch_size=16, eval_interval=200,
                       eval_batches=0, save_interval=200, early_stopping_patience=3, best_metric="val_f1",
                       best_mode="max", compile="off")


@dataclass
class ClassifyConfig:
    name: str = "decoder-full"  # the run's folder under out_root, and its name in the report
    out_root: str = "runs/classify"
    kind: Literal["decoder", "rnn", "lstm", "gru", "bow", "tfidf"] = "decoder"
    # a pretrained model folder: the decoder's weights, and the tokenizer every neural model uses
    init: str | None = None
    # a pretraining recipe that makes `init` when it does not exist yet (run first, resumable)
    pretrain: str | None = None
    pretrain_overrides: list[str] = field(default_factory=list)  # dotted overrides for that recipe
    init_weights: Literal["pretrained", "random"] = "pretrained"  # random: the from-scratch ablation
    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    max_length: int = 512  # tokens per example, <|eos|> on both sides included; longer texts: head + tail
    head_fraction: float = 0.25  # share of a truncated text's budget taken from its start
    epochs: float | None = 3.0  # sets train.max_steps (train.max_time_s still caps the run); None: max_steps
    # decoder head
    pooling: str = "last"  # last (the final <|eos|>, as HF LlamaForSequenceClassification) | mean
    head_dropout: float = 0.1
    dropout: float | None = None  # the decoder's residual/MLP dropout while fine-tuning; None: as pretrained
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

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir) if self.train.out_dir else Path(self.out_root) / self.name


def build_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                 defaults: dict | None = None) -> ClassifyConfig:
    """Defaults <- YAML recipe <- ``defaults`` (e.g. what a CLI verb sets) <- ``key=value`` overrides.

    The recipe's ``train`` section is merged over the fine-tuning defaults (not the pretraining ones)."""
    data = load_yaml(yaml_path) if yaml_path else {}
    for k, v in (defaults or {}).items():
        data[k] = v
    parsed = [parse_override(o) for o in overrides or []]
    data = apply_overrides(data, parsed)
    # per-kind sections: `by_kind: {recurrent: {train: {lr: 2e-3}}, lora: {...}, bow: {...}}` (a kind,
    # "recurrent" for rnn/lstm/gru, "lora" for the decoder with method lora) apply under the overrides
    by_kind = data.pop("by_kind", None) or {}
    if not isinstance(by_kind, dict):
        raise ConfigError("by_kind must map a kind (or 'recurrent') to a config section")
    kind = data.get("kind", "decoder")
    keys = ["recurrent", kind] if kind in ("rnn", "lstm", "gru") else [kind]
    if kind == "decoder" and data.get("method") == "lora":
        keys.append("lora")
    for key in keys:
        section = by_kind.get(key)
        if section:
            data = apply_overrides(_deep_merge(data, section), parsed)
    train = {**to_dict(_default_train()), **(data.get("train") or {})}
    data["train"] = train
    cfg = from_dict(ClassifyConfig, data)
    if cfg.kind in ("rnn", "lstm", "gru"):
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
            lcfg = cfg.lora
            lcfg.task_type = "SEQ_CLS"
            lcfg.validate()
            inject_lora(model, lcfg)  # freezes everything but the adapters and modules_to_save (the head)
        return model
    rcfg = cfg.rnn
    rcfg.cell = cfg.kind
    rcfg.vocab_size = tokenizer.vocab_size
    rcfg.pad_id = tokenizer.pad_id
    rcfg.validate()
    return RNNClassifier(rcfg, num_labels, label_names)


def _class_weights(cfg: ClassifyConfig, data: LabeledData):
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


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedClassifier:
    model: torch.nn.Module | ClassicalModel
    tokenizer: Tokenizer | None
    config: dict
    folder: Path

    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])

    @property
    def kind(self) -> str:
        return self.config["kind"]

    def predict_proba(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is empty")
        if isinstance(self.model, ClassicalModel):
            return np.asarray(self.model.predict_proba(texts), dtype=np.float32)
        from .data.clean import CleanConfig, clean_text

        clean = from_dict(CleanConfig, self.config.get("clean") or {})
        texts = [clean_text(t, clean) for t in texts]
        rows, _ = encode_texts(self.tokenizer, texts, self.config["max_length"], self.config["head_fraction"])
        return predict_proba(self.model, rows, self.tokenizer.pad_id, batch_size=batch_size, progress=progress)


def load_classifier(path: str | Path, device: str = "cpu") -> LoadedClassifier:
    """A classifier folder made by ``finetune classify`` or ``baseline`` (neural or classical)."""
    folder = ckpt.resolve(path) if (Path(path) / ckpt.LATEST).exists() else Path(path)
    if not (folder / "config.json").exists():
        raise ckpt.CheckpointError(f"{folder}: no config.json; not a model folder")
    config = json.loads((folder / "config.json").read_text("utf-8"))
    if config.get("task") != "classify":
        raise ckpt.CheckpointError(f"{folder} holds a '{config.get('task', 'lm')}' model, not a classifier "
                                   f"(make one with `scratchlm finetune classify`)")
    kind = config.get("kind")
    if kind in CLASSICAL_KINDS:
        return LoadedClassifier(ClassicalModel.load(folder), None, config, folder)
    ckpt.verify(folder)
    tokenizer = Tokenizer.load(folder)
    if kind == "decoder":
        mcfg = model_config_from_dict(config["model"])
        check_tokenizer(config, tokenizer, folder, mcfg.vocab_size)
        c = config["classifier"]
        model = SequenceClassifier(Transformer(mcfg), c["num_labels"], pooling=c["pooling"],
                                   dropout=c.get("dropout", 0.0), pad_id=c.get("pad_id"),
                                   label_names=c.get("label_names"), bias=c.get("bias", False))
    elif kind in ("rnn", "lstm", "gru"):
        model = RNNClassifier.from_config_dict(config)
        check_tokenizer(config, tokenizer, folder, model.cfg.vocab_size)
    else:
        raise ckpt.CheckpointError(f"{folder}/config.json: unknown classifier kind {kind!r}")
    if config.get("quantization"):  # an int8 folder made by `scratchlm quantize`
        from .quantize import apply_int8

        apply_int8(model, ckpt.load_tensors(folder), config["quantization"], folder)
    else:
        ckpt.load_model_weights(model, ckpt.load_tensors(folder), str(folder / "model.safetensors"))
    model.to(device).eval()
    return LoadedClassifier(model, tokenizer, config, folder)


# ------------------------------------------------------------------------------------------------ running
def evaluate_split(clf: LoadedClassifier, texts: list[str], labels: np.ndarray, *, batch_size: int = 32,
                   progress: bool = False) -> tuple[dict, np.ndarray, float]:
    """(metrics, probabilities, seconds) of ``clf`` on one labelled split."""
    t0 = time.perf_counter()
    probs = clf.predict_proba(texts, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    k = len(clf.label_names)
    m = classification_metrics(labels, probs.argmax(1), list(range(k)), clf.label_names,
                               y_score=probs[:, 1] if k == 2 else None)
    return m, probs, seconds


def _finish(cfg: ClassifyConfig, out: Path, clf: LoadedClassifier, data: LabeledData, info: dict,
            log) -> dict:
    """Validation and (once) test metrics of the saved model, the confusion PNG, report.json."""
    bs = cfg.eval_batch_size
    report = {"task": "classify", "dataset": cfg.data.dataset, "name": cfg.name, "kind": cfg.kind,
              "scratchlm_version": __version__, "command": command_line(), **info, "data": data.summary()}
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
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return report


def run(cfg: ClassifyConfig, log=print) -> dict:
    """Train one classifier of the recipe (``cfg.kind``) and report it; returns report.json's content."""
    cfg.validate()
    if cfg.kind in CLASSICAL_KINDS:
        return run_classical(cfg, log)
    out = cfg.out_dir
    cfg.train.out_dir = str(out)
    ensure_pretrained(cfg.init, cfg.pretrain, cfg.pretrain_overrides, cfg.data.data_dir, log,
                      progress=cfg.train.progress)
    pretrained = load_model(cfg.init)
    assert_not_pretrained_on(pretrained.config, cfg.data.dataset, cfg.data.test_split)
    tok = pretrained.tokenizer
    data = load_labeled(cfg.data, log=log)
    log(f"data: {data.summary()}")
    if len(data.val) == 0:
        raise ConfigError("data.val_fraction is 0: a neural model needs a validation set for early stopping and "
                          "model selection")
    train_rows, cut_train = encode_texts(tok, data.train.texts, cfg.max_length, cfg.head_fraction)
    val_rows, _ = encode_texts(tok, data.val.texts, cfg.max_length, cfg.head_fraction)
    mean_len = float(np.mean([len(r) for r in train_rows]))
    log(f"tokens: {mean_len:.0f} per training example on average; {cut_train:,} of {len(train_rows):,} "
        f"longer than {cfg.max_length} tokens, cut to head + tail")
    if cfg.kind == "decoder" and cfg.max_length > pretrained.model.cfg.block_size:
        raise ConfigError(f"max_length {cfg.max_length} exceeds the pretrained context of "
                          f"{pretrained.model.cfg.block_size} tokens")
    model = build_classifier(cfg, tok, data.num_labels, data.label_names,
                             pretrained.model if cfg.kind == "decoder" else None)
    weights = _class_weights(cfg, data)
    task = ClassifyTask(model, train_rows, data.train.labels, val_rows, data.val.labels,
                        num_labels=data.num_labels, pad_id=tok.pad_id, seed=cfg.train.seed,
                        class_weights=weights, label_smoothing=cfg.label_smoothing,
                        eval_batch_size=cfg.eval_batch_size)
    gb = cfg.train.global_batch_size or cfg.train.micro_batch_size
    if cfg.epochs is not None:
        cfg.train.max_steps = max(1, math.ceil(cfg.epochs * task.steps_per_epoch(gb)))
    n_total, n_train = count_parameters(model), count_parameters(model, trainable=True)
    log(f"model: {cfg.kind}{' (' + cfg.method + ')' if cfg.kind == 'decoder' else ''}, "
        f"{n_total / 1e6:.2f}M parameters, {n_train / 1e6:.3f}M trainable; {cfg.train.max_steps} steps of "
        f"{gb} examples ({cfg.epochs} epochs of {len(train_rows):,})")
    run_config = {"task": "classify", "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  **model_config(model), "label_names": data.label_names, "label_values": data.label_values,
                  "max_length": cfg.max_length, "head_fraction": cfg.head_fraction,
                  "clean": to_dict(cfg.data.clean), "recipe": to_dict(cfg),
                  "backbone": {"folder": str(pretrained.folder), "data": pretrained.config.get("data")}}
    # the classifier never runs the lm_head; attention at the mean example length
    flops = (pretrained.model.flops_per_token(int(mean_len), lm_head=False) if cfg.kind == "decoder" else None)
    trainer = Trainer(cfg.train, task, run_config=run_config, tokenizer=tok, flops_per_token=flops)
    result = trainer.fit()
    if trainer.dist.is_main and cfg.kind == "decoder" and cfg.method == "lora":
        _export_lora(model, cfg, result.model_dir, run_config, tok, log)
    info = {"description": _describe_run(cfg), "parameters": n_total, "trainable_parameters": n_train,
            "train_seconds": round(result.train_seconds, 1), "steps": result.step, "best_step": result.best_step,
            "stopped_because": result.stopped_because, "train_examples": len(train_rows),
            "truncated_train_examples": cut_train, "model_dir": str(result.model_dir)}
    if not trainer.dist.is_main:
        return info
    clf = load_classifier(result.model_dir)
    return _finish(cfg, out, clf, data, info, log)


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


def _describe_run(cfg: ClassifyConfig) -> str:
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
    ccfg = cfg.classical
    ccfg.kind = cfg.kind
    t0 = time.perf_counter()
    model = fit_classical(ccfg, data.train.texts, data.train.labels)
    seconds = time.perf_counter() - t0
    model_dir = out / "model"
    model.save(model_dir)
    config = {"task": "classify", "kind": cfg.kind, "scratchlm_version": __version__,
              "label_names": data.label_names, "label_values": data.label_values, "recipe": to_dict(cfg)}
    ckpt.write_json_atomic(model_dir / "config.json", config)
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
    clf = load_classifier(model_dir)
    info = {"description": _describe_run(cfg), "parameters": int(model.num_parameters),
            "trainable_parameters": int(model.num_parameters), "train_seconds": round(seconds, 1),
            "train_examples": len(data.train), "vocabulary_size": int(model.vocabulary_size),
            "model_dir": str(model_dir)}
    return _finish(cfg, out, clf, data, info, log)


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate_model(model_dir: str | Path, dataset: str, split: str, *, text_column: str | None = None,
                   label_column: str | None = None, data_dir: str | None = None, batch_size: int = 32,
                   out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Metrics of a saved classifier on any labelled split; writes metrics JSON and a confusion PNG."""
    clf = load_classifier(model_dir)
    dcfg = LabeledDataConfig(dataset=dataset, train_split=split, test_split=None, text_column=text_column,
                             label_column=label_column, data_dir=data_dir, test_fraction=0.1)
    texts, raw, origins = read_split(dcfg, split)
    values = clf.config.get("label_values") or list(range(len(clf.label_names)))
    where = _describe(dataset, split)
    try:
        labels = encode_labels(raw, values, clf.label_names, where, origins)
    except LabelError as e:
        raise LabelError(f"{e}. The model {clf.folder} was trained with labels {clf.label_names}: the label set "
                         f"of the data differs from the checkpoint's") from None
    from .data.registry import DATASETS

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
    return "\n".join(lines)
