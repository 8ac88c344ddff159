"""The verbs that train: ``prepare``, ``pretrain``, ``finetune``, ``baseline``, ``distill``, ``quickstart``.
Each takes a recipe (``--config``) and dotted overrides, and runs a stage (``scratchlm.stages``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..config import ConfigError, find_recipe, load_yaml, overrides_from_args
from ..model.kinds import SEQ2SEQ_TASKS, TASKS


def add_parsers(subparsers) -> None:
    def recipe_verb(name, fn, help_):
        sp = subparsers.add_parser(name, help=help_)
        sp.add_argument("--config", help="recipe YAML (a path or a shipped recipe name)")
        sp.add_argument("--data-dir", help="folder with the named datasets (default $SCRATCHLM_DATA_DIR)")
        sp.set_defaults(fn=fn, takes_overrides=True)
        return sp

    overwrite_help = ("start a new run in a folder that holds one: the old run is moved aside to "
                      "<folder>.old-<time> (without --resume or --overwrite such a folder is refused)")
    sp = recipe_verb("prepare", cmd_prepare, "clean a corpus, train the tokenizer, write token shards")
    sp.add_argument("--out", help="output folder (default <train.out_dir>/data)")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace data prepared there from a different recipe (refused by default)")
    sp = recipe_verb("pretrain", cmd_pretrain, "pretrain a decoder on a corpus (runs prepare first)")
    sp.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.out_dir")
    sp.add_argument("--overwrite", action="store_true", help=overwrite_help)

    sp = recipe_verb("finetune", cmd_finetune, "fine-tune a pretrained decoder into a task model")
    sp.add_argument("task", choices=["classify", *SEQ2SEQ_TASKS], help="the task to fine-tune for")
    sp.add_argument("--src", help="translate: source language (en, zh); default: the recipe's")
    sp.add_argument("--tgt", help="translate: target language (en, zh); default: the recipe's")
    sp.add_argument("--init", help="pretrained model folder or published name (overrides the recipe's init)")
    sp.add_argument("--method", choices=["full", "lora"], help="full fine-tuning or LoRA adapters")
    sp.add_argument("--from-scratch", action="store_true",
                    help="same architecture and tokenizer, random initial weights (the ablation)")
    sp.add_argument("--name", help="run name (folder under out_root and the name in the report)")
    sp.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    sp.add_argument("--overwrite", action="store_true", help=overwrite_help)

    sp = recipe_verb("baseline", cmd_baseline, "train a classical baseline on a recipe's data")
    sp.add_argument("kind", choices=["bow", "tfidf", "rnn", "lstm", "gru", "lead"],
                    help="classification: bow tfidf rnn lstm gru; translation/summarization: gru lstm lead")
    sp.add_argument("--name", help="run name (default: the kind)")
    sp.add_argument("--resume", action="store_true")
    sp.add_argument("--overwrite", action="store_true", help=overwrite_help)

    add_distill_parser(subparsers)

    sp = subparsers.add_parser("quickstart", help="the whole pipeline on real data in a few minutes")
    sp.add_argument("--out", default="runs/quickstart")
    sp.add_argument("--minutes", type=float, default=4.0, help="pretraining wall-clock budget")
    sp.add_argument("--sentiment-minutes", type=float, default=1.0,
                    help="wall-clock budget of the GRU sentiment baseline")
    sp.add_argument("--decoder-minutes", type=float, default=2.5,
                    help="wall-clock budget of fine-tuning the published base into the sentiment decoder")
    sp.add_argument("--base", default="base",
                    help="the published model to fine-tune for sentiment (default base; 'none': the few-minute model)")
    sp.add_argument("--sentiment-examples", type=int, default=2000, help="IMDb training reviews for the classifiers")
    sp.add_argument("--data-dir", default=None)
    sp.add_argument("--overwrite", action="store_true", help=overwrite_help)
    sp.set_defaults(fn=cmd_quickstart, takes_overrides=True)


def add_distill_parser(subparsers) -> None:
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
    sp.add_argument("--overwrite", action="store_true",
                    help="start a new run in a folder that holds one (the old run is moved aside first)")
    sp.set_defaults(fn=cmd_distill, takes_overrides=True)


def _apply_flags(cfg, args):
    """``--data-dir``, ``--resume`` and ``--overwrite`` over the recipe."""
    if getattr(args, "data_dir", None):
        cfg.data.data_dir = args.data_dir
    if getattr(args, "resume", False):
        cfg.train.resume = True
    if getattr(args, "overwrite", False):
        if cfg.train.resume:
            raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: choose one")
        cfg.train.overwrite = True
    return cfg


def _print_outputs(report: dict) -> None:
    print(f"report: {Path(report['model_dir']).parent / 'report.json'}\nmodel: {report['model_dir']}")


def cmd_prepare(args, extra) -> int:
    from ..data.prepare import prepare
    from ..stages.pretrain import build_config

    cfg = build_config(find_recipe(args.config), overrides_from_args(extra))
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    out = Path(args.out or Path(cfg.train.out_dir) / "data")
    _check_prepare_target(cfg, out, args.overwrite)
    data = prepare(cfg.data, out)
    print(f"prepared {data.folder}: train {len(data.train.tokens):,} tokens, "
          f"validation {len(data.val.tokens) if data.val is not None else 0:,} tokens")
    return 0


def _check_prepare_target(cfg, out: Path, overwrite: bool) -> None:
    """``prepare`` reuses a folder prepared from the same data section; one prepared from another is replaced
    only with --overwrite (a run's checkpoints were trained on the tokens there)."""
    import json

    from ..data.prepare import _fingerprint

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; choose a folder for the prepared data (--out)")
    stamp = out / "prepare.json"
    if not stamp.is_file() or overwrite:
        return
    try:
        same = json.loads(stamp.read_text("utf-8")).get("fingerprint") == _fingerprint(cfg.data)
    except (ValueError, OSError):
        same = False
    if not same:
        raise ConfigError(f"{out} holds data prepared from a different data section (see {stamp}); runs there were "
                          f"trained on it. Choose another folder (--out), or pass --overwrite to replace it")


def cmd_pretrain(args, extra) -> int:
    from ..stages.pretrain import build_config, run

    cfg = _apply_flags(build_config(find_recipe(args.config), overrides_from_args(extra)), args)
    report = run(cfg)
    if report.get("model_dir") and os.environ.get("RANK", "0") == "0":
        print(f"model: {report['model_dir']}\nreport: {Path(cfg.train.out_dir) / 'report.json'}")
    return _exit_code(report)


def _exit_code(report: dict) -> int:
    """0 when the run finished; 128 + the signal (143 for SIGTERM, 130 for SIGINT) when a signal stopped it
    after saving, so a script can tell "done" from "continue with --resume"."""
    return 128 + int(report["stop_signal"]) if report.get("stop_signal") else 0


def _is_seq2seq_recipe(args) -> bool:
    """True when the recipe (or --task) is a translation/summarization one."""
    if getattr(args, "task", None) in SEQ2SEQ_TASKS:
        return True
    path = find_recipe(args.config) if args.config else None
    return path is not None and load_yaml(path).get("task") in SEQ2SEQ_TASKS


def _run_classify(args, extra, defaults: dict) -> int:
    from ..stages import classify

    cfg = classify.build_config(find_recipe(args.config), overrides_from_args(extra), defaults=defaults)
    report = classify.run(_apply_flags(cfg, args))
    _print_outputs(report)
    return _exit_code(report)


def _run_seq2seq(args, extra, defaults: dict) -> int:
    from ..stages import seq2seq

    cfg = seq2seq.build_config(find_recipe(args.config), overrides_from_args(extra), defaults=defaults)
    report = seq2seq.run(_apply_flags(cfg, args))
    print(f"report: {cfg.out_dir / 'report.json'}")
    if "model_dir" in report:
        print(f"model: {report['model_dir']}")
    return _exit_code(report)


def cmd_finetune(args, extra) -> int:
    defaults = {}
    if args.task == "classify" and args.method:
        defaults["method"] = args.method
        if args.method == "lora":
            defaults["name"] = "decoder-lora"
    if args.init:
        defaults["init"] = args.init
    if args.from_scratch:
        defaults["init_weights"], defaults["name"] = "random", "decoder-scratch"
    if args.name:
        defaults["name"] = args.name
    if args.task == "classify":
        return _run_classify(args, extra, {**defaults, "kind": "decoder"})
    extra = [*extra, *([f"data.src_lang={args.src}"] if args.src else []),
             *([f"data.tgt_lang={args.tgt}"] if args.tgt else [])]
    return _run_seq2seq(args, extra, {"task": args.task, "kind": "decoder", **defaults})


def cmd_baseline(args, extra) -> int:
    defaults = {"kind": args.kind, "name": args.name or args.kind}
    if _is_seq2seq_recipe(args):
        if args.kind not in ("gru", "lstm", "lead"):
            print(f"scratchlm baseline: {args.kind} is a classification baseline; translation/summarization "
                  f"recipes take gru, lstm or lead", file=sys.stderr)
            return 2
        return _run_seq2seq(args, extra, defaults)
    if args.kind == "lead":
        print("scratchlm baseline: lead is the summarization baseline; this recipe is a classification one",
              file=sys.stderr)
        return 2
    return _run_classify(args, extra, defaults)


def cmd_distill(args, extra=()) -> int:
    from ..stages.distill import build_config, run

    defaults = {k: getattr(args, k) for k in ("teacher", "student", "task") if getattr(args, k, None)}
    overrides = overrides_from_args(list(extra))
    if args.name:
        overrides.append(f"name={args.name}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.resume:
        overrides.append("train.resume=true")
    if args.overwrite:
        if args.resume:
            raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: choose one")
        overrides.append("train.overwrite=true")
    report = run(build_config(find_recipe(args.config), overrides, defaults))
    if report.get("model_dir"):
        _print_outputs(report)
    return _exit_code(report)


def cmd_quickstart(args, extra) -> int:
    from ..stages.quickstart import run

    return run(out_dir=args.out, minutes=args.minutes, data_dir=args.data_dir, extra=overrides_from_args(extra),
               sentiment_minutes=args.sentiment_minutes, sentiment_examples=args.sentiment_examples,
               overwrite=args.overwrite, decoder_minutes=args.decoder_minutes,
               base=None if args.base == "none" else args.base)
