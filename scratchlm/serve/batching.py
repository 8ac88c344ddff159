"""Request batching: one worker thread per model, a bounded queue in front of it.

Handlers (on the event loop) ``submit`` a ``Job``; a full queue raises ``QueueFull`` at once (the server answers
429) instead of waiting. The worker takes the oldest waiting job plus every waiting job that can share its batch
(same task, same sampling key, rows up to ``max_batch_size``, prompts + outputs within the context) and runs them
as one batched call (static batching: a batch runs to its end, then the worker takes the next one; the rows of a
batch stop independently). Results and streamed text go back to the event loop with ``call_soon_threadsafe``.

A job can be cancelled from the event loop (client gone, timeout): a waiting job is dropped when its turn comes;
a running generation row stops at its next token, so its slot is free again within one decoding step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..api import Model


class QueueFull(RuntimeError):
    """The model's queue holds ``max_queue`` waiting requests already."""


class WorkerClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass(eq=False)  # a job is itself: compared (and removed from the queue) by identity
class Job:
    """One request's work for one model.

    ``kind``: "generate" (``rows`` is a list of GenerationRequest), "classify" (texts), "translate" or
    "summarize" (texts, with ``options``: num_beams, max_tokens, source_lang, target_lang)."""

    kind: str
    rows: list
    loop: asyncio.AbstractEventLoop
    options: dict = field(default_factory=dict)
    on_text: Callable[[int, str], None] | None = None  # generation: (row, piece), called on the event loop
    future: asyncio.Future = field(init=False)
    enqueued: float = field(default_factory=time.perf_counter)
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()
        # a request that timed out no longer awaits its future: mark a late error as seen (no asyncio warning)
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self.kind == "generate":
            for i, r in enumerate(self.rows):
                r.cancelled = self._cancelled.is_set
                if self.on_text is not None:
                    r.on_text = self._text_callback(i)

    def _text_callback(self, row: int) -> Callable[[str], None]:
        return lambda piece: self._call(self.on_text, row, piece)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    def resolve(self, result: Any) -> None:
        self._call(_set_result, self.future, result)

    def fail(self, error: BaseException) -> None:
        self._call(_set_exception, self.future, error)


def _set_result(fut: asyncio.Future, result) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future, error: BaseException) -> None:
    if not fut.done():
        fut.set_exception(error)


class ModelWorker:
    """The queue and the worker thread of one served model."""

    def __init__(self, model: Model, *, max_batch_size: int, max_queue: int, metrics=None) -> None:
        self.model, self.max_batch_size, self.max_queue = model, max_batch_size, max_queue
        self.metrics = metrics
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.running_rows = 0
        self._thread = threading.Thread(target=self._loop, name=f"scratchlm-worker-{model.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closed:
                raise WorkerClosed("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"model {self.model.name!r} has {self.max_queue} requests waiting already "
                                f"(--max-queue); retry later")
            self._pending.append(job)
            self._gauge()
            self._cv.notify()

    def close(self, timeout: float | None = None) -> None:
        """Take no new jobs; the worker finishes what is queued, then stops."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.model.name).set(len(self._pending))
            self.metrics.running_rows.labels(self.model.name).set(self.running_rows)

    # -- the worker thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending and self._closed:
                    return
                batch = self._take()
                self.running_rows = sum(len(j.rows) for j in batch)
                self._gauge()
            if batch:
                self._run(batch)
            with self._cv:
                self.running_rows = 0
                self._gauge()

    def _take(self) -> list[Job]:
        """The oldest live job and the waiting jobs that may share its batch (called with the lock held)."""
        while self._pending and self._pending[0].cancelled:
            self._pending.popleft().resolve(None)  # its request is gone
        if not self._pending:
            return []
        first = self._pending.popleft()
        batch, rows = [first], list(first.rows)
        for job in list(self._pending):
            if job.cancelled:
                self._pending.remove(job)
                job.resolve(None)
                continue
            if len(rows) + len(job.rows) > self.max_batch_size or not self._compatible(first, rows, job):
                continue
            self._pending.remove(job)
            batch.append(job)
            rows += job.rows
        return batch

    def _compatible(self, first: Job, rows: list, job: Job) -> bool:
        if job.kind != first.kind or job.options != first.options:
            return False
        if job.kind != "generate":
            return True
        joined = list(rows)
        for r in job.rows:
            if not self.model.can_share_batch(joined, r):
                return False
            joined.append(r)
        return True

    def _run(self, batch: list[Job]) -> None:
        kind, model = batch[0].kind, self.model
        rows = [r for j in batch for r in j.rows]
        t0 = time.perf_counter()
        try:
            if kind == "generate":
                results = model.generate_batch(rows, max_batch_size=len(rows))
            elif kind == "classify":
                results = model.classify(rows, batch_size=max(1, min(len(rows), 32)))
            elif kind == "translate":
                results = model.translate(rows, **batch[0].options)
            elif kind == "summarize":
                results = model.summarize(rows, **batch[0].options)
            else:
                raise ValueError(f"unknown job kind {kind!r}")
        except Exception as e:  # each request of the batch gets the error
            for j in batch:
                j.fail(e)
            return
        seconds = time.perf_counter() - t0
        self._observe(kind, batch, rows, results, seconds)
        at = 0
        for j in batch:
            j.resolve(results[at:at + len(j.rows)])
            at += len(j.rows)

    def _observe(self, kind: str, batch: list[Job], rows: list, results: list, seconds: float) -> None:
        m, name = self.metrics, self.model.name
        if m is None:
            return
        m.batch_rows.labels(name).observe(len(rows))
        m.batch_seconds.labels(name).observe(seconds)
        if kind != "generate":
            m.texts.labels(name, kind).inc(len(rows))
            return
        made = sum(g.completion_tokens for g in results)
        m.prompt_tokens.labels(name).inc(sum(g.prompt_tokens for g in results))
        m.generated_tokens.labels(name).inc(made)
        if seconds > 0:
            m.tokens_per_second.labels(name).set(made / seconds)
        at = 0
        for j in batch:
            if any(g.finish_reason == "cancelled" for g in results[at:at + len(j.rows)]):
                m.cancelled.labels(name).inc()
            at += len(j.rows)
