"""Translation and summarization end to end: fine-tune the decoder (or train the RNN baseline), decode with
greedy and beam search, score BLEU/chrF or ROUGE, write the predictions beside the references.

    scratchlm finetune translate --config tatoeba_en_zh      # the decoder, en -> zh
    scratchlm baseline gru --config tatoeba_en_zh --task translate
    scratchlm translate --model runs/tatoeba_en_zh/decoder/model "This is an example of machine translation."

Every run writes ``<out_root>/<name>/``: ``model/``, ``report.json`` (test scores for greedy and beam search,
decoding speed), ``predictions_test.jsonl`` (source, references, both predictions) and ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from . import __version__
from .beam import BeamConfig, beam_search
from .config import ConfigError, _deep_merge, apply_overrides, from_dict, load_yaml, parse_override, to_dict
from .data.parallel import ParallelData, ParallelSplit, Seq2SeqDataConfig, load_parallel
from .model.io import check_tokenizer, load_model
from .model.seq2seq_rnn import Seq2SeqRNN, Seq2SeqRNNConfig
from .model.transformer import Transformer
from .stages import command_line, count_parameters, ensure_pretrained
from .tasks.seq2seq import Example, Seq2SeqRNNTask, Seq2SeqTask, encode_pairs, prompt_prefix
from .tasks.seq2seq_metrics import bleu, chrf, rouge
from .tokenizer import Tokenizer
from .train import checkpoint as ckpt
from .train.config import TrainConfig
from .train.trainer import Trainer

TASKS = ("translate", "summarize")


def _default_train() -> TrainConfig:
    return TrainConfig(out_dir="", max_steps=100000, lr=3e-4, min_lr_ratio=0.0, warmup_steps=50,
                       schedule="linear", weight_decay=0.01, micro_batch_size=16, eval_interval=200,
                       eval_batches=0, save_interval=200, early_stopping_patience=3, best_metric="val_loss",
                       best_mode="min", compile="off")


@dataclass
class DecodeConfig:
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 64
    max_length_ratio: float | None = 2.0  # per example: at most ratio x source tokens + offset new tokens
    max_length_offset: int = 10
    batch_size: int = 32

    def beam(self, num_beams: int | None = None) -> BeamConfig:
        cfg = BeamConfig(num_beams=num_beams or self.num_beams, max_new_tokens=self.max_new_tokens,
                         length_penalty=self.length_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size)
        cfg.validate()
        return cfg


@dataclass
class Seq2SeqConfig:
    name: str = "decoder"
    out_root: str = "runs/seq2seq"
    task: Literal["translate", "summarize"] = "translate"
    kind: Literal["decoder", "gru", "lstm", "lead"] = "decoder"
    init: str | None = None  # pretrained model folder (the decoder's weights; every model's tokenizer)
    init_weights: Literal["pretrained", "random"] = "pretrained"
    pretrain: str | None = None  # a pretraining recipe that makes `init` when it does not exist yet
    pretrain_overrides: list[str] = field(default_factory=list)
    data: Seq2SeqDataConfig = field(default_factory=Seq2SeqDataConfig)
    max_target_tokens: int = 64  # longer targets are cut (and counted)
    source_head_fraction: float = 1.0  # a source too long for the context keeps its beginning (1.0) or head+tail
    # Cut every source (train, validation and test alike) to this many tokens, as max_source_len does for the
    # RNN baselines: where the output depends on the source's beginning (an e-mail's subject line) a long
    # tail costs compute and teaches little. None: only the context length cuts.
    max_source_tokens: int | None = None
    dropout: float | None = None  # the decoder's residual dropout while fine-tuning; None: as pretrained
    packing: bool = True
    pack_length: int | None = None  # packed row length (None: the model's block_size); 128 suits short pairs
    epochs: float | None = None  # sets train.max_steps; None: train.max_steps / max_time_s
    lead_sentences: int = 1  # the lead baseline (summarize): the first N sentences of the source
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    rnn: Seq2SeqRNNConfig = field(default_factory=Seq2SeqRNNConfig)  # kind gru / lstm (cell follows kind)
    eval_greedy: bool = True  # also decode the test set greedily (beside beam search)
    train: TrainConfig = field(default_factory=_default_train)

    def validate(self) -> None:
        if self.kind in ("decoder", "gru", "lstm") and not self.init:
            raise ConfigError("init: a pretrained model folder is needed (its tokenizer, and the decoder's weights)")
        if self.kind == "lead" and self.task != "summarize":
            raise ConfigError("kind lead is the summarization baseline (the first sentences of the source)")

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir) if self.train.out_dir else Path(self.out_root) / self.name


def build_config(yaml_path=None, overrides: list[str] | None = None, defaults: dict | None = None) -> Seq2SeqConfig:
    data = load_yaml(yaml_path) if yaml_path else {}
    for k, v in (defaults or {}).items():
        data[k] = v
    parsed = [parse_override(o) for o in overrides or []]
    data = apply_overrides(data, parsed)
    by_kind = data.pop("by_kind", None) or {}
    section = by_kind.get(data.get("kind", "decoder"))
    if section:
        data = apply_overrides(_deep_merge(data, section), parsed)
    data["train"] = {**to_dict(_default_train()), **(data.get("train") or {})}
    return from_dict(Seq2SeqConfig, data)


def direction(src_lang: str, tgt_lang: str) -> str:
    return f"{src_lang}-{tgt_lang}"


# ------------------------------------------------------------------------------------------------ decoding
@dataclass
class LoadedSeq2Seq:
    model: torch.nn.Module
    tokenizer: object
    config: dict
    folder: Path

    @property
    def task(self) -> str:
        return self.config["task"]

    def check_direction(self, src: str | None, tgt: str | None) -> tuple[str, str]:
        """The model's (src, tgt) languages; a different direction is an error naming the supported ones."""
        have = (self.config["src_lang"], self.config["tgt_lang"])
        want = (src or have[0], tgt or have[1])
        if want != have:
            raise ValueError(f"this model was fine-tuned for {direction(*have)}; {direction(*want)} is not "
                             f"supported (supported directions: {direction(*have)})")
        return have

    @property
    def prefix(self) -> list[int]:
        return prompt_prefix(self.tokenizer, self.task, self.config["src_lang"], self.config["tgt_lang"])

    def prompts(self, sources: list[str]) -> tuple[list[list[int]], int]:
        prefix = self.prefix
        if isinstance(self.model, Seq2SeqRNN):
            block = self.model.cfg.max_source_len + len(prefix) + 1 + self.config["max_target_tokens"] + 1
        else:
            block = self.model.cfg.block_size
        examples, report = encode_pairs(self.tokenizer, sources, None, prefix, block_size=block,
                                        max_target_tokens=self.config["max_target_tokens"],
                                        head_fraction=self.config.get("source_head_fraction", 1.0),
                                        max_source_tokens=self.config.get("max_source_tokens"))
        if report.dropped_empty:
            raise ValueError(f"{report.dropped_empty} empty source line(s), first at line {report.dropped[0] + 1}")
        return [e.prompt for e in examples], report.source_truncated

    def generate(self, sources: list[str], decode: DecodeConfig, *, num_beams: int | None = None,
                 progress: bool = False) -> list[str]:
        """Outputs for ``sources`` (batched by length), greedy when num_beams == 1. An empty (or blank)
        source gets an empty output, with a warning, so outputs stay aligned with their lines."""
        import warnings

        empty = [i for i, s in enumerate(sources) if not s.strip()]
        if empty:
            warnings.warn(f"{len(empty)} empty source line(s) (first at line {empty[0] + 1}): their outputs are "
                          f"left empty", stacklevel=2)
            keep = [i for i, s in enumerate(sources) if s.strip()]
            outs = self.generate([sources[i] for i in keep], decode, num_beams=num_beams,
                                 progress=progress) if keep else []
            full = [""] * len(sources)
            for i, o in zip(keep, outs):
                full[i] = o
            return full
        prompts, cut = self.prompts(sources)
        if cut:
            limit = self.config.get("max_source_tokens")
            warnings.warn(f"{cut} source(s) longer than the context"
                          + (f" or the model's max_source_tokens ({limit})" if limit else "") + " were truncated",
                          stacklevel=2)
        cfg = decode.beam(num_beams)
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        out: list[str] = [""] * len(prompts)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc=self.task, unit="text", dynamic_ncols=True)
        tok = self.tokenizer
        recurrent = isinstance(self.model, Seq2SeqRNN)
        for lo in range(0, len(prompts), decode.batch_size):
            sel = order[lo:lo + decode.batch_size]
            if recurrent:  # the encoder reads the bare source (no prefix, no <|sep|>)
                n = len(self.prefix)
                src = [prompts[i][n:-1] for i in sel]
                S = max(len(x) for x in src)
                ids = torch.full((len(src), S), tok.pad_id, dtype=torch.long)
                mask = torch.zeros((len(src), S), dtype=torch.long)
                for r, x in enumerate(src):
                    ids[r, :len(x)] = torch.tensor(x)
                    mask[r, :len(x)] = 1
                hyps = self.model.beam(ids, mask, cfg, max_length_ratio=decode.max_length_ratio,
                                       max_length_offset=decode.max_length_offset)
            else:
                hyps = beam_search(self.model, [prompts[i] for i in sel], cfg, pad_id=tok.pad_id, eos_id=tok.eos_id,
                                   max_length_ratio=decode.max_length_ratio,
                                   max_length_offset=decode.max_length_offset)
            for i, h in zip(sel, hyps):
                out[i] = tok.decode(h[0].tokens).strip()
            if bar is not None:
                bar.update(len(sel))
        if bar is not None:
            bar.close()
        return out


def load_seq2seq(path: str | Path, device: str = "cpu") -> LoadedSeq2Seq:
    folder = ckpt.resolve(path)
    config = ckpt.read_config(folder)
    if config.get("kind") in ("gru", "lstm"):
        ckpt.verify(folder)
        tok = Tokenizer.load(folder)
        model = Seq2SeqRNN.from_config_dict(config)
        check_tokenizer(config, tok, folder, model.cfg.vocab_size)
        ckpt.load_model_weights(model, ckpt.load_tensors(folder), str(folder / "model.safetensors"))
        return LoadedSeq2Seq(model.to(device).eval(), tok, config, folder)
    loaded = load_model(path, device)
    task = loaded.config.get("task")
    if task not in TASKS:
        raise ValueError(f"{loaded.folder} holds a '{task or 'lm'}' model, not a translation or summarization "
                         f"model (make one with `scratchlm finetune translate|summarize`)")
    return LoadedSeq2Seq(loaded.model, loaded.tokenizer, loaded.config, loaded.folder)


def lead(text: str, n: int = 1) -> str:
    """The first ``n`` sentences (or lines) of ``text``: the extractive lead baseline."""
    parts = [p.strip() for p in re.split(r"(?<=[.!?。！？])\s+|\n+", text.strip()) if p.strip()]
    return " ".join(parts[:n])


def score(task: str, tgt_lang: str, hyps: list[str], refs: list[list[str]]) -> dict:
    if task == "translate":
        return {"bleu": bleu(hyps, refs, tgt_lang), "chrf": chrf(hyps, refs, tgt_lang)}
    return {"rouge": rouge(hyps, refs, tgt_lang)}


def headline(task: str, scores: dict) -> str:
    if task == "translate":
        return f"BLEU {scores['bleu']['score']:.2f}  chrF {scores['chrf']['score']:.2f}"
    r = scores["rouge"]
    return f"ROUGE-1/2/L {r['rouge1']:.2f}/{r['rouge2']:.2f}/{r['rougeL']:.2f}"


# ------------------------------------------------------------------------------------------------ running
def _examples(tok, split: ParallelSplit, prefix: list[int], cfg: Seq2SeqConfig, block: int
              ) -> tuple[list[Example], dict]:
    exs, rep = encode_pairs(tok, split.sources, split.targets, prefix, block_size=block,
                            max_target_tokens=cfg.max_target_tokens, head_fraction=cfg.source_head_fraction,
                            max_source_tokens=cfg.max_source_tokens)
    return exs, {"examples": rep.examples, "source_truncated": rep.source_truncated,
                 "target_truncated": rep.target_truncated, "dropped_empty": rep.dropped_empty}


def _test_and_report(cfg: Seq2SeqConfig, out: Path, data: ParallelData, predict, info: dict, log) -> dict:
    test = data.test
    refs = test.references
    report = {"task": cfg.task, "dataset": cfg.data.dataset, "name": cfg.name, "kind": cfg.kind,
              "direction": direction(data.src_lang, data.tgt_lang), "scratchlm_version": __version__,
              "command": command_line(), **info, "data": data.summary(), "test_split": test.name,
              "test_examples": len(test), "test": {}}
    preds = {}
    for mode, beams in (("greedy", 1), ("beam", cfg.decode.num_beams)):
        if mode == "greedy" and not cfg.eval_greedy:
            continue
        t0 = time.perf_counter()
        preds[mode] = predict(test.sources, beams)
        seconds = time.perf_counter() - t0
        report["test"][mode] = {**score(cfg.task, data.tgt_lang, preds[mode], refs), "num_beams": beams,
                                "sentences_per_s": len(test) / seconds, "seconds": round(seconds, 1)}
        log(f"{cfg.name} {mode} ({beams} beam{'s' if beams > 1 else ''}): "
            f"{headline(cfg.task, report['test'][mode])} on {len(test):,} {test.name} examples, "
            f"{len(test) / seconds:.3g} sentences/s")
        if cfg.kind == "lead":
            break
    with open(out / "predictions_test.jsonl", "w", encoding="utf-8") as f:
        for i in range(len(test)):
            row = {"source": test.sources[i], "references": refs[i], **{m: p[i] for m, p in preds.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return report


_SPLIT_FIELDS = ("train_split", "val_split", "test_split", "val_size", "test_size", "seed", "dedup",
                 "leakage_guard")


def check_backbone_split(backbone_config: dict, data: Seq2SeqDataConfig) -> None:
    """A backbone pretrained on this dataset's text read its training pairs under the default split
    (:func:`scratchlm.data.prepare._parallel_docs`); a run that splits differently could test on them."""
    from .data.labeled import pretraining_corpora

    if data.dataset not in {source for source, _ in pretraining_corpora(backbone_config)}:
        return
    default = Seq2SeqDataConfig(dataset=data.dataset)
    diff = {f: getattr(data, f) for f in _SPLIT_FIELDS if getattr(data, f) != getattr(default, f)}
    if diff:
        from .data.prepare import LeakageError

        raise LeakageError(f"the pretrained model read {data.dataset}'s training pairs under the default split; "
                           f"this run splits differently ({diff}), so its test pairs may have been pretrained on")


def run(cfg: Seq2SeqConfig, log=print) -> dict:
    """Train one model of the recipe (``cfg.kind``), decode the test set, score it; returns report.json."""
    cfg.validate()
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = load_parallel(cfg.data)
    log(f"data: {data.summary()}")
    if cfg.kind == "lead":
        info = {"description": f"extractive lead baseline: the first {cfg.lead_sentences} sentence(s)",
                "parameters": 0, "trainable_parameters": 0, "train_seconds": 0.0}
        return _test_and_report(cfg, out, data, lambda srcs, _b: [lead(s, cfg.lead_sentences) for s in srcs],
                                info, log)
    cfg.train.out_dir = str(out)
    ensure_pretrained(cfg.init, cfg.pretrain, cfg.pretrain_overrides, cfg.data.data_dir, log,
                      progress=cfg.train.progress)
    pretrained = load_model(cfg.init)
    check_backbone_split(pretrained.config, cfg.data)
    tok = pretrained.tokenizer
    if cfg.kind in ("gru", "lstm"):
        return _run_rnn(cfg, out, data, tok, pretrained, log)
    model = pretrained.model
    if cfg.init_weights == "random":
        torch.manual_seed(cfg.train.seed)
        model = Transformer(model.cfg)
    if cfg.dropout is not None:
        model.set_dropout(cfg.dropout)
    block = model.cfg.block_size
    prefix = prompt_prefix(tok, cfg.task, data.src_lang, data.tgt_lang)
    train, train_rep = _examples(tok, data.train, prefix, cfg, block)
    val, _ = _examples(tok, data.val, prefix, cfg, block)
    log(f"tokens: train {train_rep}")
    task = Seq2SeqTask(model, train, val, block_size=block, pad_id=tok.pad_id, seed=cfg.train.seed,
                       packing=cfg.packing, pack_length=cfg.pack_length)
    gb = cfg.train.global_batch_size or cfg.train.micro_batch_size
    if cfg.epochs is not None:
        cfg.train.max_steps = max(1, math.ceil(cfg.epochs * task.rows_per_epoch() / gb))
    n_params = count_parameters(model)
    log(f"model: decoder, {n_params / 1e6:.2f}M parameters; {task.rows_per_epoch():,} "
        f"{'packed ' if cfg.packing else ''}rows per epoch; {cfg.train.max_steps} steps of {gb} rows")
    run_config = {"task": cfg.task, "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                  "model": to_dict(model.cfg), "src_lang": data.src_lang, "tgt_lang": data.tgt_lang,
                  "max_target_tokens": cfg.max_target_tokens, "source_head_fraction": cfg.source_head_fraction,
                  "max_source_tokens": cfg.max_source_tokens,
                  "decode": to_dict(cfg.decode), "recipe": to_dict(cfg),
                  "backbone": {"folder": str(pretrained.folder), "data": pretrained.config.get("data"),
                               "backbone": pretrained.config.get("backbone")}}
    trainer = Trainer(cfg.train, task, run_config=run_config, tokenizer=tok, flops_per_token=model.flops_per_token())
    result = trainer.fit()
    info = {"description": f"decoder ({cfg.init_weights}), packed seq2seq fine-tuning, loss on targets only",
            "parameters": n_params, "trainable_parameters": count_parameters(model, trainable=True),
            "train_seconds": round(result.train_seconds, 1), "steps": result.step, "best_step": result.best_step,
            "stopped_because": result.stopped_because, "train_examples": len(train),
            "model_dir": str(result.model_dir)}
    if not trainer.dist.is_main:
        return info
    loaded = load_seq2seq(result.model_dir)

    def predict(sources, beams):
        return loaded.generate(sources, cfg.decode, num_beams=beams, progress=cfg.train.progress)

    return _test_and_report(cfg, out, data, predict, info, log)


def _run_rnn(cfg: Seq2SeqConfig, out: Path, data: ParallelData, tok, pretrained, log) -> dict:
    """The recurrent encoder-decoder baseline, same tokenizer and data, trained by the shared loop."""
    rcfg = cfg.rnn
    rcfg.cell, rcfg.vocab_size = cfg.kind, tok.vocab_size
    rcfg.pad_id, rcfg.bos_id, rcfg.eos_id = tok.pad_id, tok.bos_id, tok.eos_id
    rcfg.max_target_len = cfg.max_target_tokens + 1
    if cfg.max_source_tokens is not None:  # one knob cuts every model's sources alike
        rcfg.max_source_len = min(rcfg.max_source_len, cfg.max_source_tokens)
    rcfg.validate()

    def pairs(split: ParallelSplit) -> list[tuple[list[int], list[int]]]:
        src, tgt = tok.encode_batch(split.sources), tok.encode_batch(split.targets)
        return [(s[:rcfg.max_source_len], t[:cfg.max_target_tokens]) for s, t in zip(src, tgt) if s and t]

    torch.manual_seed(cfg.train.seed)
    model = Seq2SeqRNN(rcfg)
    train, val = pairs(data.train), pairs(data.val)
    task = Seq2SeqRNNTask(model, train, val, seed=cfg.train.seed)
    gb = cfg.train.global_batch_size or cfg.train.micro_batch_size
    if cfg.epochs is not None:
        cfg.train.max_steps = max(1, math.ceil(cfg.epochs * task.steps_per_epoch(gb)))
    n_params = count_parameters(model)
    log(f"model: {cfg.kind} encoder-decoder with {rcfg.attention} attention, {n_params / 1e6:.2f}M parameters; "
        f"{cfg.train.max_steps} steps of {gb} pairs")
    run_config = {"task": cfg.task, "kind": cfg.kind, "scratchlm_version": __version__,
                  "tokenizer_fingerprint": tok.fingerprint, **model.config_dict(), "src_lang": data.src_lang,
                  "tgt_lang": data.tgt_lang, "max_target_tokens": cfg.max_target_tokens,
                  "source_head_fraction": cfg.source_head_fraction,
                  "max_source_tokens": cfg.max_source_tokens, "decode": to_dict(cfg.decode),
                  "recipe": to_dict(cfg)}
    trainer = Trainer(cfg.train, task, run_config=run_config, tokenizer=tok)
    result = trainer.fit()
    info = {"description": f"{'bi' if rcfg.bidirectional_encoder else ''}{cfg.kind.upper()} encoder-decoder, "
                           f"{rcfg.attention} attention, {rcfg.hidden_size} hidden, same BPE tokenizer",
            "parameters": n_params, "trainable_parameters": n_params, "train_seconds": round(result.train_seconds, 1),
            "steps": result.step, "best_step": result.best_step, "stopped_because": result.stopped_because,
            "train_examples": len(train), "model_dir": str(result.model_dir)}
    if not trainer.dist.is_main:
        return info
    loaded = load_seq2seq(result.model_dir)

    def predict(sources, beams):
        return loaded.generate(sources, cfg.decode, num_beams=beams, progress=cfg.train.progress)

    return _test_and_report(cfg, out, data, predict, info, log)


def evaluate_model(model_dir: str | Path, data: str | None = None, *, split: str = "test", num_beams: int = 4,
                   data_dir: str | None = None, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """BLEU/chrF or ROUGE of a saved model on its recipe's test split (the same seeded split it was trained
    around), or on ``data`` (a dataset name or a jsonl/csv/parquet file with source/target columns)."""
    loaded = load_seq2seq(model_dir)
    recipe = loaded.config.get("recipe", {}).get("data", {})
    dcfg = from_dict(Seq2SeqDataConfig, {**recipe, **({"dataset": data} if data else {}),
                                         **({"data_dir": data_dir} if data_dir else {})})
    pdata = load_parallel(dcfg)
    part = {"test": pdata.test, "validation": pdata.val, "train": pdata.train}.get(split)
    if part is None:
        raise ValueError(f"split must be test, validation or train, got {split!r}")
    decode = DecodeConfig(**loaded.config.get("decode", {}))
    t0 = time.perf_counter()
    hyps = loaded.generate(part.sources, decode, num_beams=num_beams, progress=progress)
    seconds = time.perf_counter() - t0
    out = {"model": str(loaded.folder), "data": part.name, "n": len(part), "num_beams": num_beams,
           "direction": direction(pdata.src_lang, pdata.tgt_lang), "sentences_per_s": len(part) / seconds,
           **score(loaded.task, pdata.tgt_lang, hyps, part.references)}
    if out_dir:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"eval_{Path(dcfg.dataset).stem or 'files'}_{split}_beam{num_beams}"
        (folder / f"{stem}.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", "utf-8")
        with open(folder / f"{stem}.predictions.jsonl", "w", encoding="utf-8") as f:
            for src, refs, hyp in zip(part.sources, part.references, hyps):
                f.write(json.dumps({"source": src, "references": refs, "prediction": hyp}, ensure_ascii=False) + "\n")
        out["predictions"] = str(folder / f"{stem}.predictions.jsonl")
    return out
