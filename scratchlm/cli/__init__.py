"""One entry point: ``scratchlm <verb>``. Verbs follow the pipeline: prepare -> pretrain -> generate -> evaluate.

Recipe verbs take ``--config recipe.yaml`` plus dotted overrides in any of these forms:
``--train.lr 3e-4``, ``--train.lr=3e-4`` or ``train.lr=3e-4``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..config import ConfigError
from . import export, predict, report, serve, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scratchlm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    sub = p.add_subparsers(dest="verb", required=True)
    train.add_parsers(sub)  # prepare pretrain finetune baseline distill quickstart
    predict.add_parsers(sub)  # generate evaluate classify translate summarize
    export.add_parsers(sub)  # quantize export
    serve.add_serve_parser(sub)
    report.add_parsers(sub)  # report models
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("SCRATCHLM_DEBUG"))
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # a warning is said in one line, as errors are: the source line it came from means nothing to a user
    formatwarning = warnings.formatwarning
    if not debug:
        warnings.formatwarning = warning_format(args.verb)
    try:
        return _run(args, extra, debug)
    finally:
        warnings.formatwarning = formatwarning  # main() is also called in-process (tests, notebooks)


def _run(args, extra, debug: bool) -> int:
    try:
        return args.fn(args, extra)
    except OSError as e:  # disk full, no permission, a missing folder, a path that is a file: the path and a remedy
        if debug:
            raise
        from ..train.fsutil import describe_os_error

        print(f"scratchlm {args.verb}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError, RuntimeError) as e:
        if debug:
            raise
        print(f"scratchlm {args.verb}: error: {_cli_words(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else a library raised (e.g. safetensors): one line; --debug shows where
        if debug:
            raise
        print(f"scratchlm {args.verb}: error: {type(e).__name__}: {e} (run again with --debug for the traceback)",
              file=sys.stderr)
        return 1


def warning_format(verb: str):
    """``warnings.formatwarning`` for the command line: ``scratchlm VERB: warning: message``."""
    def fmt(message, category, filename, lineno, line=None) -> str:
        kind = "" if category is UserWarning else f"{category.__name__}: "
        return f"scratchlm {verb}: warning: {kind}{message}\n"
    return fmt


# hints written for the Python API, said in the command line's words
_CLI_HINTS = (
    ("Pass column=<one of them>.", "Choose one with --column (or the recipe's column field)."),
    ("(pass dropna=True to skip empty cells)", "(remove or fill the empty cells)"),
)


def _cli_words(message: str) -> str:
    for api, cli in _CLI_HINTS:
        message = message.replace(api, cli)
    return message
