"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}`` with a fitting HTTP status.

No error body carries a filesystem path (where the models live, the server's folders): messages pass
``redact``, and an unexpected exception is answered with its type and an id only (the details, paths included,
go to the server log under that id).
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

TYPES = {401: "authentication_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout_error"}
log = logging.getLogger("scratchlm.serve")

# Strings never shown to clients: the served model folders (as given and resolved), the working and home
# folders; ``register_private`` adds to them (``create_app`` registers its models' folders).
_PRIVATE: set[str] = set()
_ROOT_DIRS: frozenset[str] = frozenset()
# an absolute POSIX path (checked against the filesystem's top-level folders, so /v1/completions is not one),
# a Windows path, or a home-relative path
_POSIX = re.compile(r"""(?<![\w.:/-])/([^\s/'"`<>()\[\]{},;]+)(?:/[^\s'"`<>()\[\]{},;]*)*""")
_OTHER = re.compile(r"""(?<![\w])(?:[A-Za-z]:\\[^\s'"`<>]*|~/[^\s'"`<>]*)""")


def register_private(*paths) -> None:
    """Never show these paths (or their resolved forms) in an error message."""
    for p in paths:
        if p is None:
            continue
        text = str(p)
        if len(text) > 1:
            _PRIVATE.add(text)
        try:
            _PRIVATE.add(str(Path(p).expanduser().resolve()))
        except (OSError, RuntimeError):
            pass


def redact(message: str) -> str:
    """``message`` without filesystem paths (each is replaced by ``<path>``)."""
    global _ROOT_DIRS
    if not _ROOT_DIRS:
        try:
            _ROOT_DIRS = frozenset(os.listdir("/")) or frozenset({"-"})
        except OSError:
            _ROOT_DIRS = frozenset({"-"})
        register_private(os.getcwd(), Path.home())
    for private in sorted(_PRIVATE, key=len, reverse=True):
        if private in message:
            message = message.replace(private, "<path>")
    message = _POSIX.sub(lambda m: "<path>" if m.group(1) in _ROOT_DIRS else m.group(0), message)
    return _OTHER.sub("<path>", message)


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": redact(message), "type": kind, "param": param, "code": code}}


def internal_error(exc: BaseException, where: str = "internal error") -> str:
    """The client's message for an unexpected exception: its type and an id; the details go to the log."""
    ref = uuid.uuid4().hex[:12]
    log.error("%s [%s]: %s: %s", where, ref, type(exc).__name__, exc, exc_info=exc)
    return f"{where}: {type(exc).__name__} (error id {ref}; the details are in the server log)"


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def error_bytes(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(error_body(status, message, param, code)).encode("utf-8")


def _field(loc) -> str | None:
    """The request field of a pydantic error location, without "body" and union-member tags like "str"."""
    parts = [p for p in (loc or ())[1:]] if loc and loc[0] == "body" else list(loc or ())
    kept = [str(p) for p in parts if isinstance(p, int) or not _is_type_tag(str(p))]
    return ".".join(kept) or None


def _is_type_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "dict", "none") or "[" in part


# pydantic's bound errors on an integer field -> OpenAI's codes (answered 400: the value is out of range)
INT_FIELDS = frozenset({"max_tokens", "max_completion_tokens", "n", "seed", "top_k", "best_of", "num_beams"})
INT_BOUNDS = {"greater_than_equal": "integer_below_min_value", "greater_than": "integer_below_min_value",
              "less_than_equal": "integer_above_max_value", "less_than": "integer_above_max_value"}


async def api_error_handler(request: Request, exc: APIError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status == 429 else None
    return error_response(exc.status, exc.message, exc.param, exc.code, headers)


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors() or [{"loc": (), "msg": "invalid request", "type": ""}]
    first = errors[0]
    if first.get("type") == "json_invalid":
        return error_response(400, "the request body is not valid JSON (a UTF-8 encoded JSON object is expected)",
                              code="invalid_json")
    param = _field(first.get("loc"))
    if param is None:  # the body as a whole: not an object, or a rule across fields
        whole = first.get("type") in ("model_attributes_type", "model_type", "dict_type")
        msg = "the request body must be a JSON object" if whole else str(first.get("msg")).removeprefix("Value error, ")
        return error_response(422, msg, code="invalid_value")
    if first.get("type") in INT_BOUNDS and param in INT_FIELDS:
        msg = str(first.get("msg", "out of range")).replace("Input should be", "must be")
        return error_response(400, f"{param}: {msg}, got {first['input']}", param, INT_BOUNDS[first["type"]])
    same = [e for e in errors if _field(e.get("loc")) == param]
    msgs = list(dict.fromkeys(str(e.get("msg", "invalid value")).removeprefix("Value error, ") for e in same))
    more = len(errors) - len(same)
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return error_response(422, f"{param}: {'; or '.join(msgs)}{tail}", param, "invalid_value")


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400 and "parsing the body" in message:
        message = "the request body is not valid JSON (UTF-8 encoded JSON object expected)"
    return error_response(exc.status_code, message, code="invalid_json" if exc.status_code == 400 else None)


async def unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, internal_error(exc, f"internal error in {request.method} {request.url.path}"))


def install(app) -> None:
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_handler)
