"""``scratchlm serve``: the parser builds from the settings' defaults alone; FastAPI, uvicorn and torch are
imported when the verb runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..serve.settings import ServeSettings

DESCRIPTION = """Serve models over HTTP: an OpenAI-compatible API, task endpoints and a web page (FastAPI + uvicorn).

    scratchlm serve --model runs/quickstart/model --model sentiment=runs/quickstart/sentiment/decoder/model

See docs/serving.md."""


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` verb to the CLI's subparsers; ``args.fn(args, extra)`` runs it."""
    d = ServeSettings()
    sp = subparsers.add_parser("serve", help="serve models over HTTP: OpenAI-compatible API, task endpoints, web page",
                               description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                    help="model folder or published model name to serve, optionally named (repeatable); default "
                         "name: the run folder's")
    sp.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=int, default=d.port, help="port (0 = any free port; the URL is printed)")
    sp.add_argument("--api-key-file", default=None, metavar="PATH",
                    help="require 'Authorization: Bearer KEY' on /v1/* and /metrics, KEY being this file's first "
                         "line (default: $SCRATCHLM_API_KEY, else no key)")
    sp.add_argument("--api-key", default=None,
                    help="deprecated: the key on the command line is visible to every user of the machine (ps); "
                         "use $SCRATCHLM_API_KEY or --api-key-file")
    sp.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                    help="a Host header value to answer (repeatable; '*.example.com' for subdomains, '*' for any "
                         "(not recommended: DNS rebinding)); default: " + ", ".join(d.allowed_hosts)
                         + " and the --host address")
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
    sp.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                    help="seconds a client has to send its request line and headers; then 408 and closed")
    sp.add_argument("--body-timeout", type=float, default=d.body_timeout_s,
                    help="seconds a client has to send its request body after the headers; then 408 and closed")
    sp.add_argument("--keep-alive-timeout", type=float, default=d.keep_alive_s,
                    help="seconds an idle kept-alive connection stays open")
    sp.add_argument("--max-connections", type=int, default=d.max_connections,
                    help="open connections; more are answered 503 and closed")
    sp.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout_s,
                    help="seconds in-flight requests get to finish after SIGINT/SIGTERM")
    sp.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sp.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    sp.set_defaults(fn=cmd_serve)
    return sp


def api_key_from(args, environ=os.environ, warn=None) -> str | None:
    """The API key: ``--api-key-file``'s first line, else ``$SCRATCHLM_API_KEY``, else ``--api-key`` (warned
    about: argv is visible to every user of the machine), else None."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
    given = [name for name, v in (("--api-key-file", getattr(args, "api_key_file", None)),
                                  ("--api-key", getattr(args, "api_key", None))) if v]
    if len(given) > 1:
        raise ValueError("give the API key once: --api-key-file or $SCRATCHLM_API_KEY (not also --api-key)")
    if getattr(args, "api_key_file", None):
        path = Path(args.api_key_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"--api-key-file: cannot read {path}: {e.strerror or e}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"--api-key-file: {path} is empty; its first line is the key")
        return key
    if getattr(args, "api_key", None):
        warn("scratchlm serve: warning: --api-key puts the key on the command line, where every user of this "
             "machine can read it (ps, /proc); use $SCRATCHLM_API_KEY or --api-key-file PATH instead")
        return args.api_key
    return environ.get("SCRATCHLM_API_KEY") or None


def settings_from_args(args) -> ServeSettings:
    s = ServeSettings(host=args.host, port=args.port, api_key=api_key_from(args),
                      max_batch_size=args.max_batch_size, max_queue=args.max_queue,
                      request_timeout_s=args.request_timeout, max_body_bytes=args.max_body_bytes,
                      max_input_chars=args.max_input_chars, max_items=args.max_items,
                      max_tokens_limit=args.max_tokens_limit, default_max_tokens=args.default_max_tokens,
                      shutdown_timeout_s=args.shutdown_timeout, header_timeout_s=args.header_timeout,
                      body_timeout_s=args.body_timeout, keep_alive_s=args.keep_alive_timeout,
                      max_connections=args.max_connections)
    if args.allowed_host:
        s.allowed_hosts = tuple(args.allowed_host)
    s.validate()
    return s


def cmd_serve(args, extra=None) -> int:
    """Load the models, then serve them until SIGINT/SIGTERM (in-flight requests finish first)."""
    settings = settings_from_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..serve import server

    server.run(server.load_models(args.model, args.device), settings, log_level=args.log_level,
               access_log=args.access_log)
    return 0
