"""``scratchlm report`` (one page comparing the models of a task) and ``scratchlm models`` (the presets)."""

from __future__ import annotations

from pathlib import Path


def add_parsers(subparsers) -> None:
    sp = subparsers.add_parser("report", help="one Markdown + HTML page comparing every model trained on a task")
    sp.add_argument("runs", nargs="+", help="run folders, or a folder of run folders (e.g. runs/imdb)")
    sp.add_argument("--out", help="output folder (default: the single folder given)")
    sp.add_argument("--title", default=None)
    sp.set_defaults(fn=cmd_report)

    sp = subparsers.add_parser("models", help="list model presets with parameter counts and FLOPs/token")
    sp.add_argument("--vocab-size", type=int, default=8192)
    sp.set_defaults(fn=cmd_models)


def cmd_report(args, extra) -> int:
    from ..stages.report import collect_runs, write_report

    runs = collect_runs(args.runs)
    out = Path(args.out or (args.runs[0] if len(args.runs) == 1 else "runs/report"))
    paths = write_report(runs, out, title=args.title)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def cmd_models(args, extra) -> int:
    import torch

    from ..model.transformer import PRESETS, Transformer, preset

    print(f"{'preset':>8} {'layers':>6} {'width':>5} {'heads':>5} {'kv':>3} {'ctx':>5} {'params':>9} "
          f"{'MFLOP/tok':>9}  (vocab {args.vocab_size})")
    for name in PRESETS:
        cfg = preset(name, vocab_size=args.vocab_size)
        with torch.device("meta"):
            m = Transformer(cfg)
        print(f"{name:>8} {cfg.n_layer:>6} {cfg.n_embd:>5} {cfg.n_head:>5} {cfg.n_kv_head:>3} {cfg.block_size:>5} "
              f"{m.num_params() / 1e6:>8.2f}M {m.flops_per_token() / 1e6:>9.1f}")
    return 0
