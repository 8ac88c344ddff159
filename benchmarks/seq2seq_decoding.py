"""Seq2seq decoding speed: sentences/s and output tokens/s of translation/summarization models, greedy and beam.

    python benchmarks/seq2seq_decoding.py --model runs/tatoeba_en_zh/decoder/model \\
        --model runs/tatoeba_en_zh/gru/model --sentences 500 --batch-sizes 1 32 --beams 1 4 --threads 2
    python benchmarks/seq2seq_decoding.py --model M --input sources.txt --json
    python benchmarks/seq2seq_decoding.py --tiny decoder gru --sentences 8     # self-test on random tiny models

Every model (a fine-tuned decoder or a GRU/LSTM baseline folder, loaded with ``scratchlm.infer.seq2seq.load_seq2seq``)
decodes the same kind of input, side by side in one process: the first ``--sentences`` sources of the model's
own recipe test split (rebuilt with ``load_parallel`` from config.json ``recipe.data``, the seeded split it was
trained around) or of ``--input`` (one source per line, blank lines skipped). For every model x decoding mode
(``--beams``: 1 = greedy, K = beam search with K beams) x batch size (``--batch-sizes``):

* one untimed warm-up batch (the first ``batch`` sources), then one timed
  ``Seq2SeqModel.generate(sources, decode, num_beams=K)`` over all the sources: tokenization, length-sorted
  batching, the search and detokenization, exactly what ``scratchlm translate`` / ``evaluate`` run;
* the decoding settings are the model's own (config.json ``decode``: length penalty, n-gram ban, length
  limits) with the batch size of the row (and ``--max-new-tokens`` when given);
* sentences/s = sources / seconds; output tok/s = generated tokens (the returned best hypothesis of every
  source, eos not counted) / seconds;
* peak RSS is the process's high-water mark so far (``resource.getrusage``): it includes loading the models
  and the data and never goes down from one row to the next; run one model per process for a per-model peak.

The machine description (CPU model from /proc/cpuinfo, logical CPUs, torch version, torch threads) is printed
with the table and in the JSON. ``--tiny`` adds randomly initialised tiny models (``decoder``, ``gru``,
``lstm``; default ``decoder``) saved like trained ones, with a small toy en->zh jsonl as their recipe data:
a self-test that needs no trained model (their speed means nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from scratchlm import __version__  # noqa: E402
from scratchlm.config import from_dict, to_dict  # noqa: E402
from scratchlm.data.parallel import Seq2SeqDataConfig, load_parallel  # noqa: E402
from scratchlm.infer.seq2seq import DecodeConfig, Seq2SeqModel, load_seq2seq  # noqa: E402
from scratchlm.stages.seq2seq import Seq2SeqConfig  # noqa: E402
from scratchlm.tokenizer import Tokenizer  # noqa: E402
from scratchlm.train.hardware import peak_rss_mb  # noqa: E402

TINY_KINDS = ("decoder", "gru", "lstm")


# ------------------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 ``model name``; ARM ``Model``/``Hardware``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "cpu"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(), "platform": platform.platform(),
            "scratchlm_version": __version__}


# ------------------------------------------------------------------------------------------------ models
class _CountingTokenizer:
    """The model's tokenizer, counting the tokens ``generate`` detokenizes (one best hypothesis per source)."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.decoded_tokens = 0

    def decode(self, ids, *args, **kwargs) -> str:
        ids = list(ids)
        self.decoded_tokens += len(ids)
        return self._tok.decode(ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def model_kind(loaded: Seq2SeqModel) -> str:
    return loaded.config.get("kind") or "decoder"


def recipe_sources(loaded: Seq2SeqModel, data_dir: str | None, cache: dict) -> tuple[list[str], str]:
    """The model's recipe test split (sources and the split's name), rebuilt as ``evaluate`` does."""
    recipe = (loaded.config.get("recipe") or {}).get("data")
    if not recipe:
        raise SystemExit(f"{loaded.folder}/config.json has no recipe.data to rebuild the test split from; "
                         f"give --input FILE (one source per line)")
    dcfg = from_dict(Seq2SeqDataConfig, {**recipe, **({"data_dir": data_dir} if data_dir else {})})
    key = json.dumps(to_dict(dcfg), sort_keys=True)
    if key not in cache:  # models of one recipe share its (seeded, identical) split
        test = load_parallel(dcfg).test
        cache[key] = (list(test.sources), test.name)
    return cache[key]


def read_input(path: str) -> list[str]:
    lines = Path(path).read_text("utf-8").split("\n")
    sources = [line.strip() for line in lines if line.strip()]
    if not sources:
        raise SystemExit(f"{path} holds no non-empty line")
    return sources


def _label(path: str, taken: set[str]) -> str:
    p = Path(path)
    label = p.parent.name if p.name == "model" and p.parent.name else p.name or str(p)
    base, i = label, 2
    while label in taken:
        label, i = f"{base}#{i}", i + 1
    taken.add(label)
    return label


def bench_model(loaded: Seq2SeqModel, label: str, sources: list[str], batch_sizes: list[int], beams: list[int],
                decode: DecodeConfig, log) -> list[dict]:
    counting = _CountingTokenizer(loaded.tokenizer)
    model = replace(loaded, tokenizer=counting)
    rows = []
    for num_beams in beams:
        for batch in batch_sizes:
            cfg = replace(decode, batch_size=batch)
            with warnings.catch_warnings():  # truncated sources are counted once per model, not per call
                warnings.simplefilter("ignore")
                model.generate(sources[:batch], cfg, num_beams=num_beams)  # warm-up (allocator, kernels)
                counting.decoded_tokens = 0
                t0 = time.perf_counter()
                model.generate(sources, cfg, num_beams=num_beams)
                seconds = time.perf_counter() - t0
            n_out = counting.decoded_tokens
            rows.append({"model": label, "kind": model_kind(loaded), "mode": "greedy" if num_beams == 1
                         else f"beam-{num_beams}", "num_beams": num_beams, "batch": batch,
                         "sentences": len(sources), "output_tokens": n_out, "seconds": seconds,
                         "sentences_per_s": len(sources) / seconds, "output_tok_s": n_out / seconds,
                         "mean_output_tokens": n_out / len(sources), "peak_rss_mb": peak_rss_mb()})
            log(f"  done: {label} {rows[-1]['mode']} batch {batch}")
    return rows


# ------------------------------------------------------------------------------------------------ --tiny
_TOY_WORDS = {"cat": "猫", "dog": "狗", "big": "大", "red": "红", "sun": "日", "tree": "树", "sea": "海", "bird": "鸟"}


def write_toy_pairs(path: Path, n: int = 120, seed: int = 0) -> Path:
    """A toy en->zh 'translation' jsonl (``en``/``zh`` columns): each English word maps to one character."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ws = rng.choices(list(_TOY_WORDS), k=rng.randint(2, 5))
        rows.append({"en": " ".join(ws) + f" {i}", "zh": "".join(_TOY_WORDS[w] for w in ws) + f"{i}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    return path


def make_tiny_model(root: str | Path, kind: str = "decoder", *, tokenizer=None, seed: int = 0,
                    max_target_tokens: int = 16) -> Path:
    """A randomly initialised tiny en->zh model folder ``root/<kind>/model``, saved with ``save_checkpoint``
    like a trained one (task ``translate``, languages, ``max_target_tokens``, ``decode``, and ``recipe.data``
    pointing at ``root/pairs.jsonl``, written here when missing). ``tokenizer``: default, a small BPE trained
    on the toy pairs (the same one for every kind, it is deterministic)."""
    from scratchlm.baselines.seq2seq_rnn import Seq2SeqRNN, Seq2SeqRNNConfig
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.model.transformer import ModelConfig, Transformer
    from scratchlm.tokenizer import MIN_VOCAB_SIZE, train_tokenizer

    if kind not in TINY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TINY_KINDS)}, got {kind!r}")
    root = Path(root)
    pairs = root / "pairs.jsonl"
    if not pairs.is_file():
        write_toy_pairs(pairs)
    if tokenizer is None:
        rows = [json.loads(line) for line in pairs.read_text("utf-8").splitlines() if line.strip()]
        tokenizer = train_tokenizer([r[c] for r in rows for c in ("en", "zh")], MIN_VOCAB_SIZE + 64)
    data = Seq2SeqDataConfig(dataset=str(pairs), source_column="en", target_column="zh", src_lang="en",
                             tgt_lang="zh", val_size=8, test_size=16)
    decode = DecodeConfig(num_beams=2, max_new_tokens=max_target_tokens, batch_size=8)
    recipe = Seq2SeqConfig(name=f"tiny-{kind}", out_root=str(root), task="translate", kind=kind,
                           init="(random tiny model)", init_weights="random", data=data,
                           max_target_tokens=max_target_tokens, decode=decode)
    config = {"task": "translate", "scratchlm_version": __version__, "tokenizer_fingerprint": tokenizer.fingerprint,
              "src_lang": "en", "tgt_lang": "zh", "max_target_tokens": max_target_tokens,
              "source_head_fraction": 1.0, "decode": to_dict(decode)}
    torch.manual_seed(seed)
    if kind == "decoder":
        model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2,
                                        n_embd=32))
        config["model"] = to_dict(model.cfg)
    else:
        rcfg = Seq2SeqRNNConfig(cell=kind, vocab_size=tokenizer.vocab_size, n_embd=32, hidden_size=32,
                                pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                                max_source_len=48, max_target_len=max_target_tokens + 1)
        rcfg.validate()
        model = Seq2SeqRNN(rcfg)
        config.update(kind=kind, **model.config_dict())
        recipe.rnn = rcfg
    config["recipe"] = to_dict(recipe)
    folder = root / kind / "model"
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(model), config=config, tokenizer=tokenizer)
    return folder


# ------------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace, log) -> dict:
    models: list[str] = list(args.model or [])
    tmp = None
    if args.tiny is not None:
        tmp = tempfile.TemporaryDirectory(prefix="seq2seq_decoding_tiny_")
        tok = None
        for kind in args.tiny or ["decoder"]:
            folder = make_tiny_model(tmp.name, kind, tokenizer=tok, seed=args.seed)
            tok = tok or Tokenizer.load(folder)  # one tokenizer for all the tiny models
            models.append(str(folder))
    if not models:
        raise SystemExit("give --model DIR (repeatable) or --tiny")
    try:
        inputs = read_input(args.input) if args.input else None
        cache: dict = {}
        taken: set[str] = set()
        infos, results = [], []
        for path in models:
            loaded = load_seq2seq(path)
            sources, data_name = (inputs, args.input) if inputs else recipe_sources(loaded, args.data_dir, cache)
            sources = sources[:args.sentences]
            decode = DecodeConfig(**loaded.config.get("decode", {}))
            if args.max_new_tokens:
                decode = replace(decode, max_new_tokens=args.max_new_tokens)
            prompts, cut = loaded.prompts(sources)
            label = _label(path, taken)
            params = sum(p.numel() for p in loaded.model.parameters())
            infos.append({"label": label, "path": str(path), "folder": str(loaded.folder), "kind": model_kind(loaded),
                          "task": loaded.task, "direction": f"{loaded.config['src_lang']}-{loaded.config['tgt_lang']}",
                          "parameters": params, "data": data_name, "sentences": len(sources),
                          "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts), "sources_truncated": cut,
                          "decode": {k: v for k, v in to_dict(decode).items() if k not in ("num_beams", "batch_size")}})
            log(f"{label}: {infos[-1]['kind']} {infos[-1]['task']} {infos[-1]['direction']}, {params / 1e6:.2f}M "
                f"parameters, {len(sources)} sources of {data_name}")
            results += bench_model(loaded, label, sources, args.batch_sizes, args.beams, decode, log)
            del loaded
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"machine": machine_info(), "settings": {"sentences": args.sentences, "batch_sizes": args.batch_sizes,
                                                    "beams": args.beams, "input": args.input, "tiny": args.tiny,
                                                    "max_new_tokens": args.max_new_tokens},
            "models": infos, "results": results, "peak_rss_mb": peak_rss_mb()}


def print_table(out: dict) -> None:
    m = out["machine"]
    print(f"{m['cpu']}  ({m['logical_cpus']} logical CPUs)  torch {m['torch']}  threads={m['threads']}")
    for info in out["models"]:
        print(f"  {info['label']}: {info['kind']} {info['task']} {info['direction']}  "
              f"{info['parameters'] / 1e6:.2f}M params  {info['sentences']} sentences of {info['data']}  "
              f"mean prompt {info['mean_prompt_tokens']:.1f} tokens"
              + (f"  ({info['sources_truncated']} truncated)" if info["sources_truncated"] else ""))
    cols = [("model", "model", "s"), ("mode", "mode", "s"), ("batch", "batch", "d"),
            ("sentences_per_s", "sent/s", ".1f"), ("output_tok_s", "out tok/s", ".1f"),
            ("mean_output_tokens", "out len", ".1f"), ("seconds", "seconds", ".2f"),
            ("peak_rss_mb", "peak RSS MB", ".0f")]
    width = max([len("model")] + [len(r["model"]) for r in out["results"]])
    widths = [width if key == "model" else max(len(head), 9) for key, head, _ in cols]
    print("  ".join(f"{head:<{w}}" if key == "model" else f"{head:>{w}}" for (key, head, _), w in zip(cols, widths)))
    for r in out["results"]:
        print("  ".join(f"{r[key]:<{w}{fmt}}" if key == "model" else f"{r[key]:>{w}{fmt}}"
                        for (key, _, fmt), w in zip(cols, widths)))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", metavar="DIR", help="a translation/summarization model folder "
                    "(decoder or GRU/LSTM baseline); repeat to compare models side by side")
    ap.add_argument("--tiny", nargs="*", choices=TINY_KINDS, default=None, metavar="KIND",
                    help="also benchmark random tiny models of these kinds (decoder, gru, lstm; default decoder): "
                         "a self-test without trained models")
    ap.add_argument("--input", metavar="FILE", help="sources, one per line (default: each model's recipe test split)")
    ap.add_argument("--data-dir", help="data folder for rebuilding the recipe split (default: the recipe's)")
    ap.add_argument("--sentences", type=int, default=500, help="decode the first N sources")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 4], help="1 = greedy, K = beam search")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="override the models' decode.max_new_tokens")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0, help="weights of the --tiny models")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    for name in ("sentences", "threads", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if min(args.batch_sizes) < 1 or min(args.beams) < 1:
        ap.error("--batch-sizes and --beams must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else (lambda msg: None)
    out = run(args, log)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print_table(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
