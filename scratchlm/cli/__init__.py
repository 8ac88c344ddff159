"""One entry point: ``scratchlm <verb>``. Verbs follow the pipeline: prepare -> pretrain -> generate -> evaluate.

Recipe verbs take ``--config recipe.yaml`` plus dotted overrides in any of these forms:
``--train.lr 3e-4``, ``--train.lr=3e-4`` or ``train.lr=3e-4``.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError
from . import export, predict, report, serve, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scratchlm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    train.add_parsers(sub)  # prepare pretrain finetune baseline distill quickstart
    predict.add_parsers(sub)  # generate evaluate classify translate summarize
    export.add_parsers(sub)  # quantize export
    serve.add_serve_parser(sub)
    report.add_parsers(sub)  # report models
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.fn(args, extra)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SCRATCHLM_DEBUG"):
            raise
        print(f"scratchlm {args.verb}: error: {e}", file=sys.stderr)
        return 2
