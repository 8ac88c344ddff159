"""uvicorn's h11 protocol with read deadlines and a connection cap (``make_protocol(settings)``).

uvicorn 0.x times out only *idle* keep-alive connections: a client that opens a connection and sends nothing,
or sends its request line and headers one byte at a time (slowloris), or declares a body and never sends it,
holds the connection (and a file descriptor) forever. This subclass adds:

* a **header deadline**: the request line and headers must be complete within ``header_timeout_s`` of the
  connection opening (or of the first byte of a later request on a kept-alive connection);
* a **body deadline**: the body must be complete within ``body_timeout_s`` of the headers;
* a **connection cap**: past ``max_connections`` open connections a new one is answered 503 and closed.

A deadline that passes is answered ``408`` (when no response has started) and the connection is closed.
Idle kept-alive connections are still closed by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_bytes

log = logging.getLogger("scratchlm.serve")


def _raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    body = error_bytes(status, message, code=code)
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n")
    return head.encode("ascii") + body


class HardenedH11Protocol(H11Protocol):
    """``H11Protocol`` with header / body read deadlines and a connection cap (class attributes, set by
    ``make_protocol``)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024
    on_reject = staticmethod(lambda reason: None)  # called with "header_timeout", "body_timeout", "connections"

    _deadline: asyncio.TimerHandle | None = None
    _deadline_kind: str | None = None

    # -- connection ------------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.on_reject("connections")
            self._answer_and_close(_raw_response(
                503, "Service Unavailable", f"the server has {self.max_connections} open connections "
                                            f"(--max-connections); try again later", "too_many_connections"))
            return
        self._arm("header")

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm("header")  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    # -- deadlines -------------------------------------------------------------------------------------------
    def _follow_state(self) -> None:
        """Switch the deadline to what the client owes now: headers, body, or nothing."""
        if self.transport is None or self.transport.is_closing():
            return self._disarm()
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._deadline_kind != "body":
                self._arm("body")
        elif state is h11.IDLE:
            if self._deadline_kind == "body":  # a new cycle started (pipelining): the next request's headers
                self._arm("header")
        else:  # DONE, MUST_CLOSE, CLOSED, ERROR: the request has been read
            self._disarm()

    def _arm(self, kind: str) -> None:
        self._disarm()
        seconds = self.header_timeout_s if kind == "header" else self.body_timeout_s
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._expired, kind)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_kind = None, None

    def _expired(self, kind: str) -> None:
        self._deadline, self._deadline_kind = None, None
        if self.transport.is_closing():
            return
        self.on_reject(f"{kind}_timeout")
        seconds = self.header_timeout_s if kind == "header" else self.body_timeout_s
        option = "--header-timeout" if kind == "header" else "--body-timeout"
        what = "request line and headers" if kind == "header" else "request body"
        if self.client:
            log.info("%s:%s: closed: the %s did not arrive within %g s", *self.client[:2], what, seconds)
        cycle = self.cycle if kind == "body" else None
        started = cycle is not None and cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now answers http.disconnect; its sends are dropped
            cycle.message_event.set()
        if started:
            self.transport.close()
        else:
            self._answer_and_close(_raw_response(408, "Request Timeout", f"the {what} did not arrive within "
                                                                         f"{seconds:g} s ({option})",
                                                 "request_timeout"))

    def _answer_and_close(self, response: bytes) -> None:
        try:
            self.transport.write(response)
        finally:
            self.transport.close()


def make_protocol(settings, on_reject=None) -> type[HardenedH11Protocol]:
    """A protocol class with ``settings``' deadlines and connection cap (uvicorn takes a class as ``http``)."""
    attrs = {"header_timeout_s": settings.header_timeout_s, "body_timeout_s": settings.body_timeout_s,
             "max_connections": settings.max_connections}
    if on_reject is not None:
        attrs["on_reject"] = staticmethod(on_reject)
    return type("ScratchlmH11Protocol", (HardenedH11Protocol,), attrs)
