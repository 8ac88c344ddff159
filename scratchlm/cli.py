"""One entry point: ``scratchlm <verb>``. Verbs follow the pipeline: prepare -> pretrain -> generate -> evaluate.

Recipe verbs take ``--config recipe.yaml`` plus dotted overrides in any of these forms:
``--train.lr 3e-4``, ``--train.lr=3e-4`` or ``train.lr=3e-4``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


def _overrides(extra: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--") and "=" not in item:
            if i + 1 >= len(extra):
                raise ConfigError(f"override {item} needs a value")
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        elif "=" in item:
            out.append(item.lstrip("-"))
            i += 1
        else:
            raise ConfigError(f"unexpected argument {item!r}; overrides look like --section.field value")
    return out


def _recipe(path: str | None) -> Path | None:
    """A recipe path, or the name of a recipe shipped in scratchlm/configs."""
    if path is None:
        return None
    p = Path(path)
    if p.exists():
        return p
    shipped = CONFIG_DIR / (path if path.endswith(".yaml") else f"{path}.yaml")
    if shipped.exists():
        return shipped
    raise ConfigError(f"recipe not found: {path} (shipped recipes: "
                      f"{', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))})")


def cmd_prepare(args, extra) -> int:
    from .data.prepare import prepare
    from .pretrain import build_config

    cfg = build_config(_recipe(args.config), _overrides(extra))
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    out = Path(args.out or Path(cfg.train.out_dir) / "data")
    data = prepare(cfg.data, out)
    print(f"prepared {data.folder}: train {len(data.train.tokens):,} tokens, "
          f"validation {len(data.val.tokens) if data.val is not None else 0:,} tokens")
    return 0


def cmd_pretrain(args, extra) -> int:
    from .pretrain import build_config, run

    cfg = build_config(_recipe(args.config), _overrides(extra))
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    if args.resume:
        cfg.train.resume = True
    report = run(cfg)
    if report.get("model_dir") and os.environ.get("RANK", "0") == "0":
        print(f"model: {report['model_dir']}\nreport: {Path(cfg.train.out_dir) / 'report.json'}")
    return 0


def cmd_generate(args, extra) -> int:
    import torch

    from .generate import SamplingConfig, stream
    from .model.io import load_model

    loaded = load_model(args.model)
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                         stop_strings=tuple(args.stop or ()), seed=args.seed)
    cfg.validate()
    torch.set_grad_enabled(False)
    prompts = args.prompt or [""]
    for prompt in prompts:
        sys.stdout.write(prompt)
        for piece in stream(loaded.model, loaded.tokenizer, prompt, cfg):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def _is_classifier(model_dir: str) -> bool:
    from .train import checkpoint as ckpt

    folder = Path(model_dir)
    try:
        if not (folder / "config.json").exists():
            folder = ckpt.resolve(folder)
        return json.loads((folder / "config.json").read_text("utf-8")).get("task") == "classify"
    except (OSError, ValueError):
        return False


def _model_task(model_dir: str) -> str | None:
    from .train import checkpoint as ckpt

    folder = Path(model_dir)
    try:
        if not (folder / "config.json").exists():
            folder = ckpt.resolve(folder)
        return json.loads((folder / "config.json").read_text("utf-8")).get("task")
    except (OSError, ValueError):
        return None


def cmd_evaluate(args, extra) -> int:
    if _model_task(args.model) in ("translate", "summarize"):
        from .seq2seq import evaluate_model, headline

        source, _, split = (args.data or "").partition(":")
        m = evaluate_model(args.model, source or None, split=split or "test", num_beams=args.beams,
                           data_dir=args.data_dir, out_dir=args.out or Path(args.model) / "eval",
                           progress=not args.json)
        print(json.dumps(m, indent=2, ensure_ascii=False) if args.json else
              f"{m['data']} ({m['n']:,} examples, {m['direction']}, beam {m['num_beams']}): "
              f"{headline(_model_task(args.model), m)}; {m['sentences_per_s']:.3g} sentences/s\n"
              + "\n".join(v["signature"] for v in m.values() if isinstance(v, dict) and "signature" in v)
              + f"\npredictions: {m.get('predictions')}")
        return 0
    if not args.data:
        print("scratchlm evaluate: --data is required (e.g. --data wikitext2:test or --data imdb:test)",
              file=sys.stderr)
        return 2
    if _is_classifier(args.model):
        from .classify import evaluate_model, format_metrics

        source, _, split = args.data.partition(":")
        m = evaluate_model(args.model, source, split or "test", text_column=args.column,
                           label_column=args.label_column, data_dir=args.data_dir, batch_size=args.batch_size,
                           out_dir=args.out or Path(args.model) / "eval", progress=not args.json)
        print(json.dumps(m, indent=2) if args.json else format_metrics(m)
              + f"\n\nconfusion matrix picture: {m.get('confusion_png')}")
        return 0
    import numpy as np
    import torch

    from .data.sources import load_texts
    from .model.io import load_model
    from .tasks.lm import evaluate_tokens, token_byte_lengths

    loaded = load_model(args.model)
    tok = loaded.tokenizer
    source, _, split = args.data.partition(":")
    texts = load_texts(source, split or "validation", args.column, data_dir=args.data_dir, dropna=True)
    ids = [t for ids in tok.encode_batch(texts, eos=True) for t in ids]
    metrics = evaluate_tokens(loaded.model, np.asarray(ids, dtype=np.int64), torch.as_tensor(token_byte_lengths(tok)))
    metrics = {"data": args.data, "tokens": len(ids), **metrics}
    print(json.dumps(metrics, indent=2) if args.json else
          "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def _classify_config(args, extra, defaults: dict | None = None):
    from .classify import build_config

    cfg = build_config(_recipe(args.config), _overrides(extra), defaults=defaults)
    if getattr(args, "data_dir", None):
        cfg.data.data_dir = args.data_dir
    if getattr(args, "resume", False):
        cfg.train.resume = True
    return cfg


def _seq2seq_recipe(args) -> bool:
    """True when the recipe (or --task) is a translation/summarization one."""
    if getattr(args, "task", None) in ("translate", "summarize"):
        return True
    path = _recipe(args.config) if args.config else None
    if path is None:
        return False
    from .config import load_yaml

    return load_yaml(path).get("task") in ("translate", "summarize")


def _run_seq2seq(args, extra, defaults: dict) -> int:
    from .seq2seq import build_config, run

    cfg = build_config(_recipe(args.config), _overrides(extra), defaults=defaults)
    if getattr(args, "data_dir", None):
        cfg.data.data_dir = args.data_dir
    if getattr(args, "resume", False):
        cfg.train.resume = True
    report = run(cfg)
    print(f"report: {cfg.out_dir / 'report.json'}")
    if "model_dir" in report:
        print(f"model: {report['model_dir']}")
    return 0


def cmd_finetune(args, extra) -> int:
    from .classify import run

    if args.task in ("translate", "summarize"):
        defaults = {"task": args.task, "kind": "decoder"}
        if args.init:
            defaults["init"] = args.init
        if args.from_scratch:
            defaults["init_weights"], defaults["name"] = "random", "decoder-scratch"
        if args.name:
            defaults["name"] = args.name
        extra = [*extra, *([f"data.src_lang={args.src}"] if args.src else []),
                 *([f"data.tgt_lang={args.tgt}"] if args.tgt else [])]
        return _run_seq2seq(args, extra, defaults)

    defaults = {}
    if args.method:
        defaults["method"] = args.method
        if args.method == "lora":
            defaults["name"] = "decoder-lora"
    if args.init:
        defaults["init"] = args.init
    if args.from_scratch:
        defaults["init_weights"] = "random"
        defaults["name"] = "decoder-scratch"
    if args.name:
        defaults["name"] = args.name
    defaults["kind"] = "decoder"
    report = run(_classify_config(args, extra, defaults))
    print(f"report: {Path(report['model_dir']).parent / 'report.json'}\nmodel: {report['model_dir']}")
    return 0


def cmd_baseline(args, extra) -> int:
    from .classify import run

    if _seq2seq_recipe(args):
        if args.kind not in ("gru", "lstm", "lead"):
            print(f"scratchlm baseline: {args.kind} is a classification baseline; translation/summarization "
                  f"recipes take gru, lstm or lead", file=sys.stderr)
            return 2
        return _run_seq2seq(args, extra, {"kind": args.kind, "name": args.name or args.kind})
    if args.kind == "lead":
        print("scratchlm baseline: lead is the summarization baseline; this recipe is a classification one",
              file=sys.stderr)
        return 2

    report = run(_classify_config(args, extra, {"kind": args.kind, "name": args.name or args.kind}))
    print(f"report: {Path(report['model_dir']).parent / 'report.json'}\nmodel: {report['model_dir']}")
    return 0


def cmd_classify(args, extra) -> int:
    import numpy as np

    from .classify import load_classifier

    clf = load_classifier(args.model)
    names = clf.label_names
    if args.input:
        from .data.sources import load_texts

        # a .txt file holds one text per line; tables name their column (default "text")
        texts = load_texts(args.input, "train", args.column or "text", txt_mode="lines")
        probs = clf.predict_proba(texts, batch_size=args.batch_size, progress=True)
        out = Path(args.output or Path(args.input).with_suffix(".predictions.jsonl"))
        import pandas as pd

        df = pd.DataFrame({"text": texts, "label": [names[i] for i in probs.argmax(1)],
                           "probability": probs.max(1).astype(float)})
        for j, n in enumerate(names):
            df[f"p_{n}"] = probs[:, j].astype(float)
        if out.suffix == ".csv":
            df.to_csv(out, index=False)
        elif out.suffix == ".parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_json(out, orient="records", lines=True, force_ascii=False)
        counts = np.bincount(probs.argmax(1), minlength=len(names))
        print(f"wrote {len(texts):,} predictions to {out} (" + ", ".join(f"{n} {c:,}" for n, c in zip(names, counts))
              + ")")
        return 0
    if not args.text:
        print("scratchlm classify: give a text or --input FILE", file=sys.stderr)
        return 2
    probs = clf.predict_proba(list(args.text), batch_size=args.batch_size)
    for text, p in zip(args.text, probs):
        j = int(p.argmax())
        if args.json:
            print(json.dumps({"text": text, "label": names[j], "probability": float(p[j]),
                              "probabilities": {n: float(x) for n, x in zip(names, p)}}, ensure_ascii=False))
        else:
            print(f"{names[j]}\t{p[j]:.4f}" + (f"\t{text[:60]}" if len(args.text) > 1 else ""))
    return 0


def _seq2seq_cli(args, task: str) -> int:
    from .seq2seq import DecodeConfig, load_seq2seq

    loaded = load_seq2seq(args.model)
    if loaded.task != task:
        print(f"scratchlm {task}: {args.model} is a {loaded.task} model", file=sys.stderr)
        return 2
    if task == "translate":
        loaded.check_direction(args.src, args.tgt)
    decode = DecodeConfig(**{**loaded.config.get("decode", {}), "num_beams": args.beams})
    if args.max_new_tokens:
        decode.max_new_tokens = args.max_new_tokens
    if args.input:
        from .data.sources import load_texts

        if Path(args.input).suffix == ".txt":  # line by line, blank lines kept (their outputs stay empty)
            from .data.parallel import read_lines

            if not Path(args.input).is_file():
                print(f"scratchlm {task}: no such file: {args.input}", file=sys.stderr)
                return 2
            texts = read_lines(Path(args.input))
        else:
            texts = load_texts(args.input, "train", args.column or "text", txt_mode="lines")
        outs = loaded.generate(texts, decode, progress=True)
        out = Path(args.output or Path(args.input).with_suffix(f".{task}.jsonl"))
        with open(out, "w", encoding="utf-8") as f:
            for t, o in zip(texts, outs):
                f.write(json.dumps({"source": t, "output": o}, ensure_ascii=False) + "\n")
        print(f"wrote {len(outs):,} outputs to {out}")
        return 0
    if not args.text:
        print(f"scratchlm {task}: give a text or --input FILE", file=sys.stderr)
        return 2
    for o in loaded.generate(list(args.text), decode):
        print(o)
    return 0


def cmd_translate(args, extra) -> int:
    return _seq2seq_cli(args, "translate")


def cmd_summarize(args, extra) -> int:
    return _seq2seq_cli(args, "summarize")


def cmd_report(args, extra) -> int:
    from .report import collect_runs, write_report

    runs = collect_runs(args.runs)
    out = Path(args.out or (args.runs[0] if len(args.runs) == 1 else "runs/report"))
    paths = write_report(runs, out, title=args.title)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def cmd_models(args, extra) -> int:
    from .model.transformer import PRESETS, Transformer, preset

    print(f"{'preset':>8} {'layers':>6} {'width':>5} {'heads':>5} {'kv':>3} {'ctx':>5} {'params':>9} "
          f"{'MFLOP/tok':>9}  (vocab {args.vocab_size})")
    for name in PRESETS:
        cfg = preset(name, vocab_size=args.vocab_size)
        import torch

        with torch.device("meta"):
            m = Transformer(cfg)
        print(f"{name:>8} {cfg.n_layer:>6} {cfg.n_embd:>5} {cfg.n_head:>5} {cfg.n_kv_head:>3} {cfg.block_size:>5} "
              f"{m.num_params() / 1e6:>8.2f}M {m.flops_per_token() / 1e6:>9.1f}")
    return 0


def cmd_quickstart(args, extra) -> int:
    from .quickstart import run

    return run(out_dir=args.out, minutes=args.minutes, data_dir=args.data_dir, extra=_overrides(extra),
               sentiment_minutes=args.sentiment_minutes, sentiment_examples=args.sentiment_examples)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scratchlm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)

    def recipe_verb(name, fn, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--config", help="recipe YAML (a path or a shipped recipe name)")
        sp.add_argument("--data-dir", help="folder with the named datasets (default $SCRATCHLM_DATA_DIR)")
        sp.set_defaults(fn=fn)
        return sp

    sp = recipe_verb("prepare", cmd_prepare, "clean a corpus, train the tokenizer, write token shards")
    sp.add_argument("--out", help="output folder (default <train.out_dir>/data)")
    sp = recipe_verb("pretrain", cmd_pretrain, "pretrain a decoder on a corpus (runs prepare first)")
    sp.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.out_dir")

    sp = sub.add_parser("generate", help="generate text from a trained model (KV cache, streaming)")
    sp.add_argument("--model", required=True, help="model folder (run folder, checkpoint or exported model)")
    sp.add_argument("prompt", nargs="*")
    sp.add_argument("--max-new-tokens", type=int, default=200)
    sp.add_argument("--temperature", type=float, default=0.8)
    sp.add_argument("--top-k", type=int, default=None)
    sp.add_argument("--top-p", type=float, default=0.95)
    sp.add_argument("--repetition-penalty", type=float, default=1.1)
    sp.add_argument("--stop", action="append", help="stop string (repeatable)")
    sp.add_argument("--seed", type=int, default=None)
    sp.set_defaults(fn=cmd_generate)

    sp = sub.add_parser("evaluate", help="perplexity and bits-per-byte of a model on a dataset split or file")
    sp.add_argument("--model", required=True)
    sp.add_argument("--data", help="dataset[:split] or a file, e.g. wikitext2:test (translation/summarization "
                                   "models: default their recipe's test split)")
    sp.add_argument("--beams", type=int, default=4, help="translation/summarization: beam size (1 = greedy)")
    sp.add_argument("--column", default=None, help="text column")
    sp.add_argument("--label-column", default=None, help="label column (classifiers)")
    sp.add_argument("--data-dir", default=None)
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--out", default=None, help="classifiers: folder for the metrics JSON and confusion PNG "
                                                "(default <model>/eval)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_evaluate)

    sp = recipe_verb("finetune", cmd_finetune, "fine-tune a pretrained decoder into a task model")
    sp.add_argument("task", choices=["classify", "translate", "summarize"], help="the task to fine-tune for")
    sp.add_argument("--src", help="translate: source language (en, zh); default: the recipe's")
    sp.add_argument("--tgt", help="translate: target language (en, zh); default: the recipe's")
    sp.add_argument("--init", help="pretrained model folder (overrides the recipe's init)")
    sp.add_argument("--method", choices=["full", "lora"], help="full fine-tuning or LoRA adapters")
    sp.add_argument("--from-scratch", action="store_true",
                    help="same architecture and tokenizer, random initial weights (the ablation)")
    sp.add_argument("--name", help="run name (folder under out_root and the name in the report)")
    sp.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")

    sp = recipe_verb("baseline", cmd_baseline, "train a classical baseline on a recipe's data")
    sp.add_argument("kind", choices=["bow", "tfidf", "rnn", "lstm", "gru", "lead"],
                    help="classification: bow tfidf rnn lstm gru; translation/summarization: gru lstm lead")
    sp.add_argument("--name", help="run name (default: the kind)")
    sp.add_argument("--resume", action="store_true")

    from .distill import add_distill_parser

    add_distill_parser(sub)

    from .export.cli import add_export_parser, add_quantize_parser

    add_quantize_parser(sub)
    add_export_parser(sub)

    sp = sub.add_parser("classify", help="label texts with a trained classifier")
    sp.add_argument("--model", required=True)
    sp.add_argument("text", nargs="*")
    sp.add_argument("--input", help="txt/jsonl/csv/parquet file of texts")
    sp.add_argument("--column", default=None, help="text column of --input (default text)")
    sp.add_argument("--output", help="predictions file (.jsonl, .csv or .parquet; default next to --input)")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_classify)

    for verb, fn, help_ in (("translate", cmd_translate, "translate text with a fine-tuned model (beam search)"),
                            ("summarize", cmd_summarize, "summarize text with a fine-tuned model (beam search)")):
        sp = sub.add_parser(verb, help=help_)
        sp.add_argument("--model", required=True)
        sp.add_argument("text", nargs="*")
        sp.add_argument("--input", help="txt (one text per line) / jsonl / csv / parquet file")
        sp.add_argument("--column", default=None, help="text column of --input (default text)")
        sp.add_argument("--output", help="output jsonl (default next to --input)")
        sp.add_argument("--beams", type=int, default=4, help="beam size (1 = greedy)")
        sp.add_argument("--max-new-tokens", type=int, default=None)
        if verb == "translate":
            sp.add_argument("--src", help="source language; must match the model's")
            sp.add_argument("--tgt", help="target language; must match the model's")
        sp.set_defaults(fn=fn)

    sp = sub.add_parser("report", help="one Markdown + HTML page comparing every model trained on a task")
    sp.add_argument("runs", nargs="+", help="run folders, or a folder of run folders (e.g. runs/imdb)")
    sp.add_argument("--out", help="output folder (default: the single folder given)")
    sp.add_argument("--title", default=None)
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("models", help="list model presets with parameter counts and FLOPs/token")
    sp.add_argument("--vocab-size", type=int, default=8192)
    sp.set_defaults(fn=cmd_models)

    from .serve import add_serve_parser

    add_serve_parser(sub)

    sp = sub.add_parser("quickstart", help="the whole pipeline on real data in a few minutes")
    sp.add_argument("--out", default="runs/quickstart")
    sp.add_argument("--minutes", type=float, default=4.0, help="pretraining wall-clock budget")
    sp.add_argument("--sentiment-minutes", type=float, default=1.0,
                    help="wall-clock budget of each neural sentiment classifier")
    sp.add_argument("--sentiment-examples", type=int, default=2000, help="IMDb training reviews for the classifiers")
    sp.add_argument("--data-dir", default=None)
    sp.set_defaults(fn=cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.verb not in ("prepare", "pretrain", "quickstart", "finetune", "baseline", "distill"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.fn(args, extra)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SCRATCHLM_DEBUG"):
            raise
        print(f"scratchlm {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
