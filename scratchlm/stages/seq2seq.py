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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from .. import __version__
from ..baselines.lead import lead
from ..baselines.seq2seq_rnn import Seq2SeqRNN, Seq2SeqRNNConfig
from ..config import ConfigError, apply_overrides, find_recipe, from_dict, load_yaml, parse_override, to_dict
from ..data.errors import LeakageError
from ..data.labeled import pretraining_corpora
from ..data.parallel import ParallelData, ParallelSplit, Seq2SeqDataConfig, load_parallel, test_file_split
from ..infer.seq2seq import DecodeConfig, Seq2SeqModel, direction, load_seq2seq
from ..model import checkpoint as ckpt
from ..model.checkpoint import CheckpointError
from ..model.folder import LoadedModel, load_decoder, resolve_model
from ..model.kinds import SEQ2SEQ_TASKS
from ..model.transformer import Transformer
from ..tasks.seq2seq import Example, Seq2SeqRNNTask, Seq2SeqTask, encode_pairs, prompt_prefix, with_prefix_space
from ..tasks.seq2seq_metrics import bleu, chrf, output_diversity, rouge, rouge_mean_refs_score
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


def _default_train() -> TrainConfig:
    return finetune_train(lr=3e-4, best_metric="val_loss", best_mode="min")


@dataclass
class Seq2SeqConfig(StageConfig):
    out_root: str = "runs/seq2seq"
    task: Literal["translate", "summarize"] = "translate"
    kind: Literal["decoder", "gru", "lstm", "lead"] = "decoder"
    data: Seq2SeqDataConfig = field(default_factory=Seq2SeqDataConfig)
    max_target_tokens: int = 64  # longer targets are cut (and counted)
    source_head_fraction: float = 1.0  # a source too long for the context keeps its beginning (1.0) or head+tail
    # Cut every source (train, validation and test alike) to this many tokens, as max_source_len does for the
    # RNN baselines: where the output depends on the source's beginning (an e-mail's subject line) a long
    # tail costs compute and teaches little. None: only the context length cuts.
    max_source_tokens: int | None = None
    # > 0: a pointer-generator copy head of this width on the decoder (model/copy.py): each output token mixes
    # the vocabulary distribution with attention over the source tokens, so a summary can take the e-mail's
    # own words. 0: no copy head.
    copy_dim: int = 0
    packing: bool = True
    pack_length: int | None = None  # packed row length (None: the model's block_size); 128 suits short pairs
    lead_sentences: int = 1  # the lead baseline (summarize): the first N sentences of the source
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    rnn: Seq2SeqRNNConfig = field(default_factory=Seq2SeqRNNConfig)  # kind gru / lstm (cell follows kind)
    eval_greedy: bool = True  # also decode the test set greedily (beside beam search)
    # Which split the report decodes and scores: "validation" for pilots and decoding choices, so the test set
    # is read once, at the end (the report then says validation everywhere it would say test).
    report_split: Literal["test", "validation"] = "test"
    # Encode every source and target with a leading space, so a word has the same tokens at the start of a
    # target as inside the source (byte-level BPE gives "Enron" and " Enron" different tokens): what a copy
    # head needs to copy a subject's first word. Saved with the model; decoding applies it too.
    prefix_space: bool = False
    # summarize: after training, fit an extract-or-abstract switch on the validation split (infer/lead_switch.py:
    # per source, the decoder's summary or the source's first sentence), saved in the model's config.json and
    # used by every later decode (decode.lead_switch=false turns it off)
    lead_switch: bool = False
    train: TrainConfig = field(default_factory=_default_train)

    def validate(self) -> None:
        if self.kind in ("decoder", "gru", "lstm") and not self.init:
            raise ConfigError("init: a pretrained model folder is needed (its tokenizer, and the decoder's weights)")
        if self.kind == "lead" and self.task != "summarize":
            raise ConfigError("kind lead is the summarization baseline (the first sentences of the source)")


def build_config(yaml_path=None, overrides: list[str] | None = None, defaults: dict | None = None) -> Seq2SeqConfig:
    """Defaults <- YAML recipe <- ``defaults`` <- ``key=value`` overrides, then the ``by_kind`` section of
    this run's kind."""
    return stage_recipe(Seq2SeqConfig, yaml_path, overrides, defaults, default_train=_default_train(),
                        sections=lambda recipe: [recipe.get("kind", "decoder")])


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
def encode_examples(tok: Tokenizer, split: ParallelSplit, prefix: list[int], cfg: Seq2SeqConfig, block: int
                    ) -> tuple[list[Example], dict]:
    exs, rep = encode_pairs(tok, split.sources, split.targets, prefix, block_size=block,
                            max_target_tokens=cfg.max_target_tokens, head_fraction=cfg.source_head_fraction,
                            max_source_tokens=cfg.max_source_tokens, prefix_space=cfg.prefix_space)
    return exs, {"examples": rep.examples, "source_truncated": rep.source_truncated,
                 "target_truncated": rep.target_truncated, "dropped_empty": rep.dropped_empty}


def make_task(cfg: Seq2SeqConfig, model: Transformer, tok: Tokenizer, data: ParallelData, block: int, log, *,
              pack_length: int | None) -> Seq2SeqTask:
    """The decoder's task: every pair as ``prefix + source + <|sep|> + target``, packed into rows of
    ``pack_length`` tokens (None: ``block``)."""
    prefix = prompt_prefix(tok, cfg.task, data.src_lang, data.tgt_lang)
    train, train_rep = encode_examples(tok, data.train, prefix, cfg, block)
    val, _ = encode_examples(tok, data.val, prefix, cfg, block)
    log(f"tokens: train {train_rep}")
    return Seq2SeqTask(model, train, val, block_size=block, pad_id=tok.pad_id, seed=cfg.train.seed,
                       packing=cfg.packing, pack_length=pack_length)


def folder_config(cfg: Seq2SeqConfig, model: torch.nn.Module, tok: Tokenizer, data: ParallelData) -> dict:
    """config.json of a translation/summarization folder (the caller adds where its backbone came from)."""
    if isinstance(model, Seq2SeqRNN):
        network = {"kind": cfg.kind, "scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                   **model.config_dict()}
    else:
        network = {"scratchlm_version": __version__, "tokenizer_fingerprint": tok.fingerprint,
                   "model": to_dict(model.cfg)}
    return {"task": cfg.task, **network, "src_lang": data.src_lang, "tgt_lang": data.tgt_lang,
            "max_target_tokens": cfg.max_target_tokens, "source_head_fraction": cfg.source_head_fraction,
            "max_source_tokens": cfg.max_source_tokens, "prefix_space": cfg.prefix_space,
            "decode": to_dict(cfg.decode), "recipe": to_dict(cfg)}


def report_seq2seq(cfg: Seq2SeqConfig, out: Path, data: ParallelData, predict, info: dict, log) -> dict:
    """Decode the test split (greedy, then beam search), score it, write the predictions and report.json."""
    test = data.val if cfg.report_split == "validation" else data.test
    refs = test.references
    report = {**report_header(cfg.task, cfg.data.dataset, cfg.name, cfg.kind),
              "direction": direction(data.src_lang, data.tgt_lang), **info, "data": data.summary(),
              "pii_redactions": dict(data.redactions),
              "test_split": test.name, "test_examples": len(test), "test": {}}
    preds = {}
    for mode, beams in (("greedy", 1), ("beam", cfg.decode.num_beams)):
        if mode == "greedy" and not cfg.eval_greedy:
            continue
        t0 = time.perf_counter()
        preds[mode] = predict(test.sources, beams)
        seconds = time.perf_counter() - t0
        report["test"][mode] = {**score(cfg.task, data.tgt_lang, preds[mode], refs), "num_beams": beams,
                                **output_diversity(preds[mode]),
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
    write_json(out / "report.json", report)
    return report


def decode_and_report(cfg: Seq2SeqConfig, out: Path, data: ParallelData, log):
    """``fit_and_report``'s report step: the saved model decodes the test split."""

    def report(info: dict, trainer) -> dict:
        loaded = load_seq2seq(info["model_dir"])
        if cfg.lead_switch:
            fit_lead_switch(cfg, loaded, data, log)
            loaded = load_seq2seq(info["model_dir"])
        return report_seq2seq(cfg, out, data, predictor(loaded, cfg.decode, cfg.train.progress), info, log)

    return report


def fit_lead_switch(cfg: Seq2SeqConfig, loaded: Seq2SeqModel, data: ParallelData, log) -> dict | None:
    """Fit the lead switch on the validation split (decoded here without a switch) and write it into the saved
    model's config.json; a split that cannot train one (too small, or one outcome only) leaves the model as it
    is, with a warning. Returns the switch."""
    from ..infer.lead_switch import fit

    if cfg.task != "summarize" or isinstance(loaded.model, Seq2SeqRNN):
        raise ConfigError("lead_switch is for decoder summarizers (task summarize)")
    val = data.val
    hyps = loaded.generate(val.sources, replace(cfg.decode, lead_switch=False), progress=cfg.train.progress)
    try:
        switch = fit(val.sources, hyps, val.references, rouge_mean_refs_score(data.tgt_lang), loaded.target_loss)
    except ValueError as e:
        log(f"warning: lead switch not fitted on {val.name}: {e}")
        return None
    cf = switch["cross_fitted"]
    log(f"lead switch fitted on {len(val):,} {val.name} examples: cross-fitted, the lead for "
        f"{cf['lead_chosen']:.0%} of them, mean ROUGE {100 * cf['score']:.2f} "
        f"(summary {100 * cf['summary_score']:.2f}, lead {100 * cf['lead_score']:.2f})")
    ckpt.rewrite_config(loaded.folder, {**loaded.config, "lead_switch": switch})
    return switch


def predictor(loaded: Seq2SeqModel, decode: DecodeConfig, progress: bool):
    def predict(sources: list[str], beams: int) -> list[str]:
        return loaded.generate(sources, decode, num_beams=beams, progress=progress)

    return predict


_SPLIT_FIELDS = ("train_split", "val_split", "test_split", "val_size", "test_size", "seed", "dedup",
                 "leakage_guard")


def check_backbone_split(backbone_config: dict, data: Seq2SeqDataConfig) -> None:
    """A backbone pretrained on this dataset's text read its training pairs under the default split
    (:func:`scratchlm.data.prepare._parallel_docs`); a run that splits differently could test on them."""
    if data.dataset not in {source for source, _ in pretraining_corpora(backbone_config)}:
        return
    default = Seq2SeqDataConfig(dataset=data.dataset)
    own_test = test_file_split(data)
    if own_test is not None and own_test == test_file_split(default):
        return  # the test set is the dataset's own file either way: how the rest is split cannot leak it
    diff = {f: getattr(data, f) for f in _SPLIT_FIELDS if getattr(data, f) != getattr(default, f)}
    if diff:
        raise LeakageError(f"the pretrained model read {data.dataset}'s training pairs under the default split; "
                           f"this run splits differently ({diff}), so its test pairs may have been pretrained on")


def run(cfg: Seq2SeqConfig, log=print) -> dict:
    """Train one model of the recipe (``cfg.kind``), decode the test set, score it; returns report.json."""
    cfg.validate()
    out = cfg.out_dir
    guard_run_folder(cfg.train, out, log)
    out.mkdir(parents=True, exist_ok=True)
    data = load_parallel(cfg.data)
    log(f"data: {data.summary()}")
    if cfg.kind == "lead":
        info = {"description": f"extractive lead baseline: the first {cfg.lead_sentences} sentence(s)",
                "parameters": 0, "trainable_parameters": 0, "train_seconds": 0.0}
        return report_seq2seq(cfg, out, data, lambda srcs, _b: [lead(s, cfg.lead_sentences) for s in srcs],
                               info, log)
    cfg.train.out_dir = str(out)
    ensure_init(cfg, log)
    pretrained = load_decoder(cfg.init)
    check_backbone_split(pretrained.config, cfg.data)
    if cfg.kind in ("gru", "lstm"):
        return _run_rnn(cfg, out, data, pretrained.tokenizer, log)
    tok = pretrained.tokenizer
    model = pretrained.model
    if cfg.init_weights == "random":
        torch.manual_seed(cfg.train.seed)
        model = Transformer(model.cfg)
    if cfg.dropout is not None:
        model.set_dropout(cfg.dropout)
    if cfg.copy_dim and model.copy_head is None:
        torch.manual_seed(cfg.train.seed)
        model.add_copy_head(cfg.copy_dim)
    task = make_task(cfg, model, tok, data, model.cfg.block_size, log, pack_length=cfg.pack_length)
    global_batch_size = global_batch(cfg.train)
    set_max_steps(cfg.train, cfg.epochs, task.rows_per_epoch(), global_batch_size)
    n_params = count_parameters(model)
    log(f"model: decoder, {n_params / 1e6:.2f}M parameters; {task.rows_per_epoch():,} "
        f"{'packed ' if cfg.packing else ''}rows per epoch; {cfg.train.max_steps} steps of {global_batch_size} rows")
    run_config = {**folder_config(cfg, model, tok, data), "backbone": _lineage(pretrained)}
    copy = f", copy head ({cfg.copy_dim})" if model.copy_head is not None else ""
    info = {"description": f"decoder ({cfg.init_weights}){copy}, packed seq2seq fine-tuning, loss on targets only",
            "parameters": n_params, "trainable_parameters": count_parameters(model, trainable=True),
            "train_examples": len(task.train)}
    return fit_and_report(cfg.train, task, run_config=run_config, tokenizer=tok, info=info,
                          report=decode_and_report(cfg, out, data, log), flops_per_token=model.flops_per_token())


def ensure_init(cfg: Seq2SeqConfig, log) -> None:
    """Make ``init`` when it does not exist yet. ``pretrain`` names a pretraining recipe, or the seq2seq stage
    this one continues (``aeslc_annotated`` refines the ``aeslc`` summarizer), which runs first the same way:
    with ``pretrain_overrides`` applied, resuming if an earlier attempt was interrupted."""
    path = find_recipe(cfg.pretrain) if cfg.pretrain else None
    task = load_yaml(path).get("task") if path is not None else None
    if task not in SEQ2SEQ_TASKS:
        ensure_pretrained(cfg.init, cfg.pretrain, cfg.pretrain_overrides, cfg.data.data_dir, log,
                          progress=cfg.train.progress)
        return
    try:
        resolve_model(cfg.init)
        return
    except (FileNotFoundError, CheckpointError):
        pass
    prev = build_config(path, cfg.pretrain_overrides, defaults={"task": task, "kind": "decoder"})
    if cfg.data.data_dir:
        prev.data.data_dir = cfg.data.data_dir
    prev.train.resume = True
    prev.train.progress = prev.train.progress and cfg.train.progress
    target = prev.out_dir / "model"
    if Path(cfg.init).resolve() != target.resolve():
        raise ConfigError(f"init: {cfg.init} is not what recipe {cfg.pretrain!r} makes ({target})")
    log(f"init: {cfg.init} does not exist yet; running the recipe {cfg.pretrain!r} first")
    report = run(prev, log)
    if report.get("stop_signal"):
        raise SystemExit(128 + int(report["stop_signal"]))


def _lineage(pretrained: LoadedModel) -> dict:
    return {"folder": str(pretrained.folder), "data": pretrained.config.get("data"),
            "backbone": pretrained.config.get("backbone")}


def _run_rnn(cfg: Seq2SeqConfig, out: Path, data: ParallelData, tok: Tokenizer, log) -> dict:
    """The recurrent encoder-decoder baseline, same tokenizer and data, trained by the shared loop."""
    rnn = cfg.rnn
    rnn.cell, rnn.vocab_size = cfg.kind, tok.vocab_size
    rnn.pad_id, rnn.bos_id, rnn.eos_id = tok.pad_id, tok.bos_id, tok.eos_id
    rnn.max_target_len = cfg.max_target_tokens + 1
    if cfg.max_source_tokens is not None:  # one knob cuts every model's sources alike
        rnn.max_source_len = min(rnn.max_source_len, cfg.max_source_tokens)
    rnn.validate()

    def pairs(split: ParallelSplit) -> list[tuple[list[int], list[int]]]:
        sources, targets = split.sources, split.targets
        if cfg.prefix_space:  # as the decoder's examples, and as decoding will encode the sources
            sources, targets = with_prefix_space(sources), with_prefix_space(targets)
        src, tgt = tok.encode_batch(sources), tok.encode_batch(targets)
        return [(s[:rnn.max_source_len], t[:cfg.max_target_tokens]) for s, t in zip(src, tgt) if s and t]

    torch.manual_seed(cfg.train.seed)
    model = Seq2SeqRNN(rnn)
    train, val = pairs(data.train), pairs(data.val)
    task = Seq2SeqRNNTask(model, train, val, seed=cfg.train.seed)
    global_batch_size = global_batch(cfg.train)
    set_max_steps(cfg.train, cfg.epochs, task.steps_per_epoch(global_batch_size))
    n_params = count_parameters(model)
    log(f"model: {cfg.kind} encoder-decoder with {rnn.attention} attention, {n_params / 1e6:.2f}M parameters; "
        f"{cfg.train.max_steps} steps of {global_batch_size} pairs")
    info = {"description": f"{'bi' if rnn.bidirectional_encoder else ''}{cfg.kind.upper()} encoder-decoder, "
                           f"{rnn.attention} attention, {rnn.hidden_size} hidden, same BPE tokenizer",
            "parameters": n_params, "trainable_parameters": n_params, "train_examples": len(train)}
    return fit_and_report(cfg.train, task, run_config=folder_config(cfg, model, tok, data), tokenizer=tok, info=info,
                          report=decode_and_report(cfg, out, data, log))


def evaluate_model(model_dir: str | Path, data: str | None = None, *, split: str = "test", num_beams: int = 4,
                   data_dir: str | None = None, out_dir: str | Path | None = None, progress: bool = True,
                   decode_overrides: list[str] = ()) -> dict:
    """BLEU/chrF or ROUGE of a saved model on its recipe's test split (the same seeded split it was trained
    around), or on ``data`` (a dataset name or a jsonl/csv/parquet file with source/target columns).
    ``decode_overrides``: ``key=value`` changes to the model's decoding settings (``DecodeConfig``), e.g. to
    choose them on the validation split."""
    loaded = load_seq2seq(model_dir)
    recipe = loaded.config.get("recipe", {}).get("data", {})
    data_cfg = from_dict(Seq2SeqDataConfig, {**recipe, **({"dataset": data} if data else {}),
                                         **({"data_dir": data_dir} if data_dir else {})})
    pdata = load_parallel(data_cfg)
    part = {"test": pdata.test, "validation": pdata.val, "train": pdata.train}.get(split)
    if part is None:
        raise ValueError(f"split must be test, validation or train, got {split!r}")
    decode = from_dict(DecodeConfig, apply_overrides(loaded.config.get("decode", {}),
                                                     [parse_override(x) for x in decode_overrides]), "decode")
    t0 = time.perf_counter()
    hyps = loaded.generate(part.sources, decode, num_beams=num_beams, progress=progress)
    seconds = time.perf_counter() - t0
    out = {"model": str(loaded.folder), "data": part.name, "n": len(part), "num_beams": num_beams,
           "decode": to_dict(decode),
           "direction": direction(pdata.src_lang, pdata.tgt_lang), "sentences_per_s": len(part) / seconds,
           **score(loaded.task, pdata.tgt_lang, hyps, part.references), **output_diversity(hyps)}
    if out_dir:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"eval_{Path(data_cfg.dataset).stem or 'files'}_{split}_beam{num_beams}"
        stem += "".join(f"_{x.replace('=', '-')}" for x in decode_overrides)
        (folder / f"{stem}.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", "utf-8")
        with open(folder / f"{stem}.predictions.jsonl", "w", encoding="utf-8") as f:
            for src, refs, hyp in zip(part.sources, part.references, hyps):
                f.write(json.dumps({"source": src, "references": refs, "prediction": hyp}, ensure_ascii=False) + "\n")
        out["predictions"] = str(folder / f"{stem}.predictions.jsonl")
    return out
