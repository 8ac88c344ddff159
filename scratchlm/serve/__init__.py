"""``scratchlm serve``: an OpenAI-compatible HTTP server with task endpoints and a web page (FastAPI + uvicorn).

    scratchlm serve --model runs/quickstart/model --model sentiment=runs/quickstart/sentiment/decoder/model

See docs/serving.md. This module stays light (argparse only) so the CLI can import it for ``--help``; the
server's own modules (``app``, ``batching``, ...) import FastAPI and torch when ``cmd_serve`` runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ServeError(RuntimeError):
    """The server cannot start (a model folder that does not load, a name used twice, a busy port)."""


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` verb to the CLI's subparsers; ``args.fn(args, extra)`` runs it."""
    from .settings import ServeSettings

    d = ServeSettings()
    sp = subparsers.add_parser("serve", help="serve models over HTTP: OpenAI-compatible API, task endpoints, web page",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                    help="model folder to serve, optionally named (repeatable); default name: the run folder's")
    sp.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=int, default=d.port, help="port (0 = any free port; the URL is printed)")
    sp.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on /v1/* and /metrics (default $SCRATCHLM_API_KEY)")
    sp.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    sp.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    sp.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                    help="rows per batched forward pass; 1 turns request batching off")
    sp.add_argument("--max-queue", type=int, default=d.max_queue,
                    help="requests that may wait per model; more are answered 429")
    sp.add_argument("--request-timeout", type=float, default=d.request_timeout_s, help="seconds; then 504")
    sp.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit, help="largest max_tokens allowed")
    sp.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens,
                    help="max_tokens of a request that gives none")
    sp.add_argument("--max-input-chars", type=int, default=d.max_input_chars,
                    help="characters per prompt or text; more is 413")
    sp.add_argument("--max-items", type=int, default=d.max_items,
                    help="texts per classify/translate/summarize request, and prompts x n per completion")
    sp.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="request body size; more is 413")
    sp.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout_s,
                    help="seconds in-flight requests get to finish after SIGINT/SIGTERM")
    sp.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sp.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    sp.set_defaults(fn=cmd_serve)
    return sp


def settings_from_args(args):
    import os

    from .settings import ServeSettings

    s = ServeSettings(host=args.host, port=args.port, api_key=args.api_key or os.environ.get("SCRATCHLM_API_KEY"),
                      max_batch_size=args.max_batch_size, max_queue=args.max_queue,
                      request_timeout_s=args.request_timeout, max_body_bytes=args.max_body_bytes,
                      max_input_chars=args.max_input_chars, max_items=args.max_items,
                      max_tokens_limit=args.max_tokens_limit, default_max_tokens=args.default_max_tokens,
                      shutdown_timeout_s=args.shutdown_timeout)
    s.validate()
    return s


def parse_model_specs(specs: list[str]) -> list[tuple[str | None, str]]:
    """``[NAME=]DIR`` -> (name or None, dir); an existing path that contains '=' is a path."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and NAME.match(name) and not Path(spec).exists():
            out.append((name, path))
        else:
            out.append((None, spec))
    return out


def load_models(specs: list[str], device: str = "cpu", log=print) -> dict:
    """Load every ``--model``; the first that fails stops the server before it starts, saying why."""
    from ..api import load

    models: dict = {}
    for name, path in parse_model_specs(specs):
        try:
            model = load(path, device=device, name=name)
        except Exception as e:  # any failure to load is a reason not to start
            raise ServeError(f"cannot serve model {name + '=' if name else ''}{path}: {type(e).__name__}: {e}") from e
        if model.name in models:
            raise ServeError(f"two models are named {model.name!r} ({models[model.name].folder} and {model.folder}); "
                             f"name them: --model NAME=DIR")
        models[model.name] = model
        log(f"scratchlm serve: loaded {model.name!r} ({model.task}: {', '.join(model.tasks)}) from {model.folder}")
    return models


def bind(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def cmd_serve(args, extra=None) -> int:
    """Load the models, then serve them until SIGINT/SIGTERM (in-flight requests finish first)."""
    import signal

    import uvicorn

    settings = settings_from_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = load_models(args.model, args.device)
    from .app import create_app

    app = create_app(models, settings)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "::1", "localhost") and not settings.api_key:
        print(f"scratchlm serve: warning: listening on {host} without --api-key: anyone who can reach this "
              f"machine can use the models", file=sys.stderr)
    print(f"scratchlm serve: http://{shown}:{port}/ (web page), http://{shown}:{port}/v1 (OpenAI-compatible API); "
          f"Ctrl-C stops", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log,
                            timeout_graceful_shutdown=settings.shutdown_timeout_s)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler it found;
    # this one turns that into a normal exit instead of a KeyboardInterrupt traceback or death by SIGTERM
    stopped = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        print(f"scratchlm serve: stopped by {signal.Signals(stopped[0]).name}; in-flight requests were finished",
              flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m scratchlm.serve ...``: the same as ``scratchlm serve ...``."""
    import os

    parser = argparse.ArgumentParser(prog="scratchlm")
    sub = parser.add_subparsers(dest="verb", required=True)
    add_serve_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args, [])
    except (ServeError, ValueError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SCRATCHLM_DEBUG"):
            raise
        print(f"scratchlm serve: error: {e}", file=sys.stderr)
        return 2
