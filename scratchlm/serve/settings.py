"""The server's limits and switches (``scratchlm serve`` options), in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # when set, /v1/* and /metrics need "Authorization: Bearer <key>"
    max_batch_size: int = 16  # rows in one batched forward pass (1 = no request batching)
    max_queue: int = 64  # requests waiting per model; one more is answered 429
    request_timeout_s: float = 120.0  # a request still unanswered after this is cancelled and answered 504
    max_body_bytes: int = 1 << 20  # a larger request body is answered 413 before it is parsed
    max_input_chars: int = 50_000  # one prompt / text; longer is 413
    max_items: int = 64  # texts in one classify/translate/summarize request, prompts x n in one completion
    max_tokens_limit: int = 1024  # the largest max_tokens a request may ask for
    default_max_tokens: int = 128  # chat/completions without max_tokens (capped by what the context leaves)
    max_n: int = 8  # choices per prompt
    max_beams: int = 8
    shutdown_timeout_s: float = 30.0  # graceful shutdown: how long in-flight requests may take to finish
    header_timeout_s: float = 10.0  # the request line + headers must arrive within this (slowloris); else 408
    body_timeout_s: float = 30.0  # the request body must arrive within this of the headers; else 408
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this
    max_connections: int = 1024  # open connections; one more is answered 503 and closed
    # Host header values (a port is ignored) that are answered; others get 400 (DNS rebinding). "*" = any;
    # "*.example.com" = its subdomains. Loopback names only by default: add the names the server is reached by.
    allowed_hosts: tuple[str, ...] = field(default_factory=lambda: LOOPBACK_HOSTS)

    def host_allowed(self, host: str) -> bool:
        """Whether a request's Host header (``name``, ``name:port``, ``[v6]:port``) is on the allow-list."""
        host = host.strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        host = host.rstrip(".")
        for allowed in self.allowed_hosts:
            if allowed == "*" or host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return bool(host) or allowed == "*"
        return False

    def validate(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_input_chars", "max_items",
                     "max_tokens_limit", "default_max_tokens", "max_n", "max_beams", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"--request-timeout must be > 0 seconds, got {self.request_timeout_s}")
        for name, flag in (("header_timeout_s", "--header-timeout"), ("body_timeout_s", "--body-timeout"),
                           ("keep_alive_s", "--keep-alive-timeout")):
            if getattr(self, name) <= 0:
                raise ValueError(f"{flag} must be > 0 seconds, got {getattr(self, name)}")
        self.allowed_hosts = tuple(h.strip().lower().removeprefix("[").removesuffix("]")
                                   for h in self.allowed_hosts if h.strip())
        if not self.allowed_hosts:
            raise ValueError("--allowed-host: give at least one host name (or '*' for any)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {self.port}")
