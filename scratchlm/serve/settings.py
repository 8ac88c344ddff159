"""The server's limits and switches (``scratchlm serve`` options), in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass


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

    def validate(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_input_chars", "max_items",
                     "max_tokens_limit", "default_max_tokens", "max_n", "max_beams"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"--request-timeout must be > 0 seconds, got {self.request_timeout_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {self.port}")
