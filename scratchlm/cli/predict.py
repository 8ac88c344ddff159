"""The verbs that use a trained model: ``generate``, ``evaluate``, ``classify``, ``translate``,
``summarize``. ``--model`` is a model folder or a published model name (``scratchlm.model.folder``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..model.kinds import SEQ2SEQ_TASKS


def add_parsers(subparsers) -> None:
    model_help = "model folder (run folder, checkpoint or exported model) or published model name"
    sp = subparsers.add_parser("generate", help="generate text from a trained model (KV cache, streaming)")
    sp.add_argument("--model", required=True, help=model_help)
    sp.add_argument("prompt", nargs="*")
    sp.add_argument("--max-new-tokens", type=int, default=200)
    sp.add_argument("--temperature", type=float, default=0.8)
    sp.add_argument("--top-k", type=int, default=None)
    sp.add_argument("--top-p", type=float, default=0.95)
    sp.add_argument("--repetition-penalty", type=float, default=1.1)
    sp.add_argument("--stop", action="append", help="stop string (repeatable)")
    sp.add_argument("--seed", type=int, default=None)
    sp.set_defaults(fn=cmd_generate)

    sp = subparsers.add_parser("evaluate", help="perplexity and bits-per-byte of a model on a dataset split or file")
    sp.add_argument("--model", required=True, help=model_help)
    sp.add_argument("--data", help="dataset[:split] or a file, e.g. wikitext2:test (translation/summarization "
                                   "models: default their recipe's test split)")
    sp.add_argument("--beams", type=int, default=4, help="translation/summarization: beam size (1 = greedy)")
    sp.add_argument("--decode", action="append", default=[], metavar="KEY=VALUE",
                    help="translation/summarization: change one of the model's decoding settings for this run, "
                         "e.g. --decode length_penalty=1.5 --decode anti_lm_weight=0.3 (repeatable)")
    sp.add_argument("--column", default=None, help="text column")
    sp.add_argument("--label-column", default=None, help="label column (classifiers)")
    sp.add_argument("--data-dir", default=None)
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--out", default=None, help="classifiers: folder for the metrics JSON and confusion PNG "
                                                "(default <model>/eval; runs/eval/<name> for a published name)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_evaluate)

    sp = subparsers.add_parser("classify", help="label texts with a trained classifier")
    sp.add_argument("--model", required=True, help=model_help)
    sp.add_argument("text", nargs="*")
    sp.add_argument("--input", help="txt/jsonl/csv/parquet file of texts")
    sp.add_argument("--column", default=None, help="text column of --input (default text)")
    sp.add_argument("--output", help="predictions file: the input's rows and columns plus prediction, probability "
                                     "and p_<label>, as .jsonl, .csv or .parquet (the extension says which; "
                                     "default <input>.predictions.<input's format> next to --input)")
    sp.add_argument("--overwrite", action="store_true", help="replace --output when it exists (never the input)")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_classify)

    for verb, help_ in (("translate", "translate text with a fine-tuned model (beam search)"),
                        ("summarize", "summarize text with a fine-tuned model (beam search)")):
        sp = subparsers.add_parser(verb, help=help_)
        sp.add_argument("--model", required=True, help=model_help)
        sp.add_argument("text", nargs="*")
        sp.add_argument("--input", help="txt (one text per line) / jsonl / csv / parquet file")
        sp.add_argument("--column", default=None, help="text column of --input (default text)")
        sp.add_argument("--output", help="outputs file: the input's rows and columns plus output (a .txt input: "
                                         "source, output), as .jsonl, .csv or .parquet (default "
                                         f"<input>.{verb}.jsonl next to --input)")
        sp.add_argument("--overwrite", action="store_true", help="replace --output when it exists (never the input)")
        sp.add_argument("--beams", type=int, default=4, help="beam size (1 = greedy)")
        sp.add_argument("--max-new-tokens", type=int, default=None)
        if verb == "translate":
            sp.add_argument("--src", help="source language; must match the model's")
            sp.add_argument("--tgt", help="target language; must match the model's")
        sp.set_defaults(fn=cmd_seq2seq)


def cmd_generate(args, extra) -> int:
    import torch

    from ..infer.generate import SamplingConfig, stream
    from ..model.folder import load_decoder

    loaded = load_decoder(args.model)
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                         stop_strings=tuple(args.stop or ()), seed=args.seed)
    cfg.validate()
    with torch.no_grad():
        for prompt in args.prompt or [""]:
            sys.stdout.write(prompt)
            for piece in stream(loaded.model, loaded.tokenizer, prompt, cfg):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
    return 0


def cmd_evaluate(args, extra) -> int:
    from ..model.folder import read_model_config

    folder, config = read_model_config(args.model)
    task = config.get("task")
    if task in SEQ2SEQ_TASKS:
        return _evaluate_seq2seq(args, task)
    if not args.data:
        print("scratchlm evaluate: --data is required (e.g. --data wikitext2:test or --data imdb:test)",
              file=sys.stderr)
        return 2
    if task == "classify":
        return _evaluate_classifier(args)
    return _evaluate_lm(args)


def _evaluate_seq2seq(args, task: str) -> int:
    from ..stages.seq2seq import evaluate_model, headline

    source, _, split = (args.data or "").partition(":")
    m = evaluate_model(args.model, source or None, split=split or "test", num_beams=args.beams,
                       data_dir=args.data_dir, out_dir=_eval_out(args), progress=not args.json,
                       decode_overrides=args.decode)
    print(json.dumps(m, indent=2, ensure_ascii=False) if args.json else
          f"{m['data']} ({m['n']:,} examples, {m['direction']}, beam {m['num_beams']}): "
          f"{headline(task, m)}; {m['sentences_per_s']:.3g} sentences/s\n"
          + "\n".join(v["signature"] for v in m.values() if isinstance(v, dict) and "signature" in v)
          + f"\npredictions: {m.get('predictions')}")
    return 0


def _eval_out(args) -> Path:
    """Where evaluate writes its JSON, predictions and pictures: --out, else <model folder>/eval; for a
    published name, runs/eval/<name> (the published folder stays as its manifest describes it, and nothing
    lands in a ./<name> folder of the working directory)."""
    if args.out:
        return Path(args.out)
    model = Path(args.model)
    return model / "eval" if model.exists() else Path("runs") / "eval" / args.model


def _evaluate_classifier(args) -> int:
    from ..stages.classify import evaluate_model, format_metrics

    source, _, split = args.data.partition(":")
    m = evaluate_model(args.model, source, split or "test", text_column=args.column,
                       label_column=args.label_column, data_dir=args.data_dir, batch_size=args.batch_size,
                       out_dir=_eval_out(args), progress=not args.json)
    print(json.dumps(m, indent=2) if args.json else format_metrics(m)
          + f"\n\nconfusion matrix picture: {m.get('confusion_png')}")
    return 0


def _evaluate_lm(args) -> int:
    import numpy as np
    import torch

    from ..data.sources import load_texts
    from ..model.folder import load_decoder
    from ..tasks.lm import evaluate_tokens, token_byte_lengths

    loaded = load_decoder(args.model)
    tok = loaded.tokenizer
    source, _, split = args.data.partition(":")
    texts = load_texts(source, split or "validation", args.column, data_dir=args.data_dir, dropna=True)
    ids = [t for ids in tok.encode_batch(texts, eos=True) for t in ids]
    metrics = evaluate_tokens(loaded.model, np.asarray(ids, dtype=np.int64), torch.as_tensor(token_byte_lengths(tok)),
                              progress=False if args.json else f"score {args.data}")
    metrics = {"data": args.data, "tokens": len(ids), **metrics}
    if "forward_gflops_per_s" in metrics:
        from ..train.hardware import measure_matmul_peak

        peak = measure_matmul_peak(torch.device("cpu"), torch.float32)
        metrics["mfu"] = metrics["forward_gflops_per_s"] * 1e9 / peak
    print(json.dumps(metrics, indent=2) if args.json else
          "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


OUTPUT_FORMATS = (".jsonl", ".csv", ".parquet")


def _output_path(args, what: str, keep_format: bool) -> Path:
    """``--output`` (or the default next to ``--input``), refused before any work when it is the input, exists
    (without --overwrite), is a folder, is in a missing folder, or has an extension no writer knows."""
    from ..train.fsutil import check_output_file

    inp = Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(2, "No such file or directory (--input)", str(inp))
    if args.output:
        out = Path(args.output)
    else:
        fmt = inp.suffix.lower() if keep_format and inp.suffix.lower() in OUTPUT_FORMATS else ".jsonl"
        out = inp.with_name(f"{inp.stem}.{what}{fmt}")
    return check_output_file(out, inputs=(inp,), overwrite=args.overwrite, formats=OUTPUT_FORMATS)


def _read_table(args, keep_blank_lines: bool):
    """``--input`` as a DataFrame (every column kept) and its texts: a .txt file is one text per line (blank lines
    kept with ``keep_blank_lines``, so outputs stay aligned with their lines) in a column ``text``; tables name
    their text column with --column (default text)."""
    import pandas as pd

    from ..config import ConfigError
    from ..data.sources import load_table

    path = Path(args.input)
    if keep_blank_lines and path.suffix == ".txt":
        from ..data.parallel import read_lines

        df = pd.DataFrame({"text": read_lines(path)})
    else:
        df = load_table(args.input, "train", txt_mode="lines")
    column = args.column or "text"
    if column not in df.columns:
        raise ConfigError(f"--input {args.input} has no column {column!r}; its columns: "
                          f"{', '.join(map(str, df.columns))}. Choose one with --column")
    texts = []
    for i, value in enumerate(df[column].tolist()):
        if not isinstance(value, str):
            if keep_blank_lines and (value is None or value != value):
                value = ""
            else:
                raise ConfigError(f"--input {args.input}, row {i + 1}, column {column!r}: expected a text, got "
                                  f"{type(value).__name__} {value!r} (remove or fill the empty cells)")
        texts.append(value)
    return df, texts


def _add_columns(df, columns: dict, args):
    from ..config import ConfigError

    clash = [c for c in columns if c in df.columns]
    if clash:
        raise ConfigError(f"--input {args.input} already has the column(s) {', '.join(clash)} that the output adds "
                          f"(is it an output file?); rename or drop them first")
    for name, values in columns.items():
        df[name] = values
    return df


def _write_table(df, out: Path) -> None:
    """``df`` as the format ``out``'s extension names, written atomically (a full disk leaves no partial file)."""
    from ..train.fsutil import write_atomic

    suffix = out.suffix.lower()
    if suffix == ".csv":
        write_atomic(out, lambda tmp: df.to_csv(tmp, index=False))
    elif suffix == ".parquet":
        write_atomic(out, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        write_atomic(out, lambda tmp: df.to_json(tmp, orient="records", lines=True, force_ascii=False))


def cmd_classify(args, extra) -> int:
    import numpy as np

    from ..infer.classify import load_classifier

    out = _output_path(args, "predictions", keep_format=True) if args.input else None
    clf = load_classifier(args.model)
    names = clf.label_names
    if args.input:
        df, texts = _read_table(args, keep_blank_lines=False)
        probs = clf.predict_proba(texts, batch_size=args.batch_size, progress=True)
        columns = {"prediction": [names[i] for i in probs.argmax(1)], "probability": probs.max(1).astype(float)}
        for j, n in enumerate(names):
            columns[f"p_{n}"] = probs[:, j].astype(float)
        _write_table(_add_columns(df, columns, args), out)
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


def cmd_seq2seq(args, extra) -> int:
    """``translate`` and ``summarize``: the verb must be the model's task."""
    from ..infer.seq2seq import DecodeConfig, load_seq2seq

    task = args.verb
    if args.input and Path(args.input).suffix == ".txt" and not Path(args.input).is_file():
        print(f"scratchlm {task}: no such file: {args.input}", file=sys.stderr)
        return 2
    out = _output_path(args, task, keep_format=False) if args.input else None
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
        df, texts = _read_table(args, keep_blank_lines=True)
        outs = loaded.generate(texts, decode, progress=True)
        if Path(args.input).suffix == ".txt":  # lines: the source beside its output
            df = df.rename(columns={"text": "source"})
        _write_table(_add_columns(df, {"output": outs}, args), out)
        print(f"wrote {len(outs):,} outputs to {out}")
        return 0
    if not args.text:
        print(f"scratchlm {task}: give a text or --input FILE", file=sys.stderr)
        return 2
    for o in loaded.generate(list(args.text), decode):
        print(o)
    return 0
