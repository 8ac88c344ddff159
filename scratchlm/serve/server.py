"""Start the server: load every model first (one that fails stops the start, saying why), bind the port,
then run uvicorn until SIGINT/SIGTERM, letting in-flight requests finish."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

from ..api import Model, load
from .settings import ServeSettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ServeError(RuntimeError):
    """The server cannot start (a model folder that does not load, a name used twice, a busy port)."""


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


def load_models(specs: list[str], device: str = "cpu", log=print) -> dict[str, Model]:
    """Load every ``--model``; the first that fails stops the server before it starts, saying why."""
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


def bind(host: str, port: int) -> socket.socket:
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


def uvicorn_config(app, settings: ServeSettings, **kw):
    """uvicorn's ``Config`` for ``app`` with the settings' read deadlines, keep-alive and connection cap."""
    import uvicorn

    from .protocol import make_protocol

    metrics = getattr(getattr(getattr(app, "state", None), "serve", None), "metrics", None)
    on_reject = (lambda reason: metrics.rejected.labels(reason).inc()) if metrics is not None else None
    kw.setdefault("timeout_graceful_shutdown", settings.shutdown_timeout_s)
    return uvicorn.Config(app, http=make_protocol(settings, on_reject),
                          timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works
                          **kw)


def add_bound_host(settings: ServeSettings, host: str) -> None:
    """A server bound to one specific address also answers requests that name that address."""
    if host not in ("0.0.0.0", "::", "") and not settings.host_allowed(host if ":" not in host else f"[{host}]"):
        settings.allowed_hosts = (*settings.allowed_hosts, host.lower())


def run(models: dict[str, Model], settings: ServeSettings, *, log_level: str = "info",
        access_log: bool = False) -> None:
    """Serve ``models`` until SIGINT/SIGTERM (in-flight requests finish first)."""
    import uvicorn

    from .app import create_app

    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    add_bound_host(settings, host)
    app = create_app(models, settings)
    shown = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "::1", "localhost") and not settings.api_key:
        print(f"scratchlm serve: warning: listening on {host} without an API key ($SCRATCHLM_API_KEY or "
              f"--api-key-file): anyone who can reach this machine can use the models", file=sys.stderr)
    if "*" in settings.allowed_hosts:
        print("scratchlm serve: warning: --allowed-host '*' answers any Host header: a web page on another site "
              "can reach this server through DNS rebinding; name the hosts instead", file=sys.stderr)
    elif host in ("0.0.0.0", "::"):
        print(f"scratchlm serve: note: only requests for {', '.join(settings.allowed_hosts)} are answered; add the "
              f"names this machine is reached by with --allowed-host NAME", file=sys.stderr)
    print(f"scratchlm serve: http://{shown}:{port}/ (web page), http://{shown}:{port}/v1 (OpenAI-compatible API); "
          f"Ctrl-C stops", flush=True)
    config = uvicorn_config(app, settings, log_level=log_level, access_log=access_log)
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
