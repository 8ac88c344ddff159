"""What the server exposes at ``GET /metrics`` (Prometheus text format), in its own registry.

Requests by endpoint and status, request latency, requests in flight, queue depth and running rows per model,
batch sizes and batch times, prompt and generated tokens (``rate(scratchlm_generated_tokens_total[1m])`` is
tokens/s; ``scratchlm_generation_tokens_per_second`` is the last batch's), rejected and cancelled requests, and
the process' memory and CPU (``process_resident_memory_bytes``, ...).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output and nobody reads them
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("scratchlm_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("scratchlm_request_duration_seconds", "Time to the end of the response (the "
                                 "whole stream for streaming requests)", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.in_flight = Gauge("scratchlm_requests_in_flight", "Requests being answered", registry=r)
        self.queue_depth = Gauge("scratchlm_queue_depth", "Requests waiting for the model", ["model"], registry=r)
        self.running_rows = Gauge("scratchlm_running_rows", "Rows in the batch the model is running",
                                  ["model"], registry=r)
        self.batch_rows = Histogram("scratchlm_batch_rows", "Rows (prompts x choices, or texts) per batch",
                                    ["model"], buckets=ROW_BUCKETS, registry=r)
        self.batch_seconds = Histogram("scratchlm_batch_seconds", "Time to run one batch", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("scratchlm_prompt_tokens", "Prompt tokens read", ["model"], registry=r)
        self.generated_tokens = Counter("scratchlm_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.tokens_per_second = Gauge("scratchlm_generation_tokens_per_second",
                                       "Generated tokens per second of the model's last batch", ["model"],
                                       registry=r)
        self.texts = Counter("scratchlm_texts", "Texts classified, translated or summarized", ["model", "task"],
                             registry=r)
        self.rejected = Counter("scratchlm_requests_rejected", "Requests refused before running, by reason",
                                ["reason"], registry=r)
        self.cancelled = Counter("scratchlm_requests_cancelled", "Generations stopped early because the client "
                                 "went away or the request timed out", ["model"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
