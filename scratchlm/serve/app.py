"""The FastAPI application: ``create_app(models, settings)``.

Routes: ``GET /`` (the web page) and ``/static/*``, ``GET /health``, ``GET /metrics``, ``GET /v1/models``,
``POST /v1/completions`` and ``/v1/chat/completions`` (``openai_routes.py``), ``POST /v1/classify``,
``/v1/translate`` and ``/v1/summarize`` (``task_routes.py``). ``Guard`` (an ASGI middleware) runs first: Host
allow-list (DNS rebinding), API key, body size limit, request counts and latency. Read deadlines and the
connection cap are the protocol's (``protocol.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..api import Model, TaskError
from . import errors
from .batching import Job, ModelWorker, QueueFull, WorkerClosed
from .errors import APIError, error_bytes
from .metrics import Metrics
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/translate", "/v1/summarize",
             "/v1/models", "/health", "/metrics", "/")
OPEN_PATHS = ("/", "/health", "/favicon.ico")  # reachable without the API key (the page asks for the key)


class ServeState:
    """What the routes share: the models, their workers, the limits, the metrics."""

    def __init__(self, models: dict[str, Model], settings: ServeSettings, metrics: Metrics) -> None:
        self.models, self.settings, self.metrics = models, settings, metrics
        self.workers = {name: ModelWorker(m, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                                          metrics=metrics) for name, m in models.items()}
        self.started = time.time()
        self.shutting_down = False

    def model(self, name: str | None, method: str) -> Model:
        """The served model called ``name`` (or the only one that can ``method``), checked to do ``method``."""
        if name is None:
            able = [m for m in self.models.values() if method in m.tasks]
            if len(able) == 1:
                return able[0]
            raise APIError(400 if able else 404, f"say which model to use: 'model' is required"
                           f" (models that can {method}: {', '.join(m.name for m in able) or 'none'})",
                           param="model", code="model_required" if able else "model_not_found")
        model = self.models.get(name)
        if model is None:
            raise APIError(404, f"model {name!r} is not served here; served models: {', '.join(self.models)}",
                           param="model", code="model_not_found")
        if method not in model.tasks:  # said without the model's folder (Model._require names it)
            raise APIError(400, f"model {model.name!r} is a {model.task} model: it can {' / '.join(model.tasks)}, "
                                f"not {method}", param="model", code="unsupported_task")
        return model

    async def run(self, model: Model, job: Job):
        """Queue ``job`` on the model's worker and wait for its result (429 when the queue is full)."""
        self.submit(model, job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.settings.request_timeout_s)
        except TimeoutError:
            job.cancel()
            self.metrics.rejected.labels("timeout").inc()
            raise APIError(504, f"the request did not finish within {self.settings.request_timeout_s:g} s "
                                f"(--request-timeout); it was cancelled", code="timeout") from None
        except asyncio.CancelledError:
            job.cancel()
            raise
        except (TaskError, ValueError) as e:
            raise APIError(400, str(e)) from None

    def submit(self, model: Model, job: Job) -> None:
        if self.shutting_down:
            raise APIError(503, "the server is shutting down", code="shutting_down")
        try:
            self.workers[model.name].submit(job)
        except QueueFull as e:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, str(e), code="queue_full") from None
        except WorkerClosed as e:
            raise APIError(503, str(e), code="shutting_down") from None


class Guard:
    """ASGI middleware: Host allow-list (400), API key (401), body size limit (413 before parsing), request
    counts, latency, in-flight."""

    def __init__(self, app, state: ServeState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, settings, metrics = scope["path"], self.state.settings, self.state.metrics
        endpoint = path if path in ENDPOINTS else ("/static" if path.startswith("/static/") else "other")
        t0, status = time.perf_counter(), [500]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def reply(code: int, message: str, error_code: str, headers=()):
            await counted_send({"type": "http.response.start", "status": code,
                                "headers": [(b"content-type", b"application/json"), *headers]})
            await counted_send({"type": "http.response.body", "body": error_bytes(code, message, code=error_code)})

        metrics.in_flight.inc()
        try:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not settings.host_allowed(host):
                return await reply(400, f"the Host header {host[:100]!r} is not one this server answers to "
                                        f"(--allowed-host)", "invalid_host")
            if settings.api_key and path not in OPEN_PATHS and not path.startswith("/static/") \
                    and not self._authorized(scope):
                return await reply(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                   "invalid_api_key", [(b"www-authenticate", b"Bearer")])
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(receive, settings.max_body_bytes, scope)
                if body is DISCONNECTED:  # the client went away (or its body timed out): no one to answer
                    status[0] = 499
                    return
                if body is None:
                    return await reply(413, f"the request body is larger than {settings.max_body_bytes:,} bytes "
                                            f"(--max-body-bytes)", "request_too_large")
                receive = _replay(body, receive)
            return await self.app(scope, receive, counted_send)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(endpoint, str(status[0])).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    def _authorized(self, scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(),
                                                                     self.state.settings.api_key.encode())

    @staticmethod
    async def _read_body(receive, limit: int, scope):
        """The whole body, None when it is over ``limit`` bytes (declared or sent), ``DISCONNECTED`` when the
        client disconnected before sending all of it."""
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return DISCONNECTED
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


DISCONNECTED = object()


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for http.disconnect, as usual

    return replay


def create_app(models: dict[str, Model], settings: ServeSettings | None = None) -> FastAPI:
    """The server for ``models`` (name -> loaded ``scratchlm.api.Model``)."""
    settings = settings or ServeSettings()
    settings.validate()
    state = ServeState(models, settings, Metrics())
    for m in models.values():
        errors.register_private(m.folder)  # error messages never show where the models live

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for w in state.workers.values():
            w.start()
        yield
        state.shutting_down = True  # uvicorn has waited for the in-flight requests by now
        for w in state.workers.values():
            await asyncio.to_thread(w.close, settings.shutdown_timeout_s)

    # no /docs: Swagger UI loads from a CDN, and the server must work offline (the schema is at /openapi.json)
    app = FastAPI(title="scratchlm", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    errors.install(app)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    @app.get("/health")
    async def health():
        body = {"status": "shutting_down" if state.shutting_down else "ok", "version": __version__,
                "models": list(models), "uptime_s": round(time.time() - state.started, 1),
                "queued": {n: w.queued for n, w in state.workers.items()}}
        return JSONResponse(body, status_code=503 if state.shutting_down else 200)

    @app.get("/metrics")
    async def metrics_endpoint():
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/models")
    async def list_models():
        created = int(state.started)
        data = []
        for m in models.values():
            info = {k: v for k, v in m.info().items() if k not in ("id", "folder")}
            data.append({"id": m.name, "object": "model", "created": created, "owned_by": "scratchlm", **info})
        return {"object": "list", "data": data}

    from . import openai_routes, task_routes

    openai_routes.add_routes(app, state)
    task_routes.add_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, state=state)
    return app


def request_state(request: Request) -> ServeState:
    return request.app.state.serve
