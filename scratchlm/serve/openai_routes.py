"""OpenAI-compatible ``POST /v1/completions`` and ``POST /v1/chat/completions`` (also streamed, as server-sent
events ending with ``data: [DONE]``). Chat uses the ``scratchlm-plain-v1`` template (``scratchlm.api``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..api import CHAT_STOP, Generation, GenerationRequest, Model, _groups, format_chat
from .batching import Job
from .errors import APIError, error_body, internal_error
from .schemas import ChatCompletionRequest, CompletionRequest

FINGERPRINT = f"scratchlm-{__version__}"


def generation_rows(state, model: Model, prompts: list[str], body, stops: tuple[str, ...] = ()
                    ) -> list[GenerationRequest]:
    """Validated rows (``n`` per prompt) of one request; 413 / 422 with a message when a limit is passed."""
    s = state.settings
    if len(prompts) * body.n > s.max_items or body.n > s.max_n:
        raise APIError(413, f"{len(prompts)} prompt(s) x n={body.n} asks for {len(prompts) * body.n} completions; "
                            f"this server answers at most {s.max_items} per request and n <= {s.max_n}",
                       param="n", code="too_many_items")
    if body.max_tokens is not None and not 1 <= body.max_tokens <= s.max_tokens_limit:
        raise APIError(422, f"max_tokens must be between 1 and {s.max_tokens_limit} (--max-tokens-limit), got "
                            f"{body.max_tokens}", param="max_tokens", code="invalid_value")
    ctx = model.context_length
    group, rows = next(_groups), []
    for i, prompt in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
        if not prompt:
            raise APIError(422, f"{where} is empty; give some text to continue", param="prompt", code="empty_prompt")
        if len(prompt) > s.max_input_chars:
            raise APIError(413, f"{where} has {len(prompt):,} characters; the limit is {s.max_input_chars:,} "
                                f"(--max-input-chars)", param="prompt", code="prompt_too_long")
        ids = model.encode(prompt)
        if len(ids) >= ctx:
            raise APIError(413, f"{where} has {len(ids):,} tokens; model {model.name!r} reads at most {ctx} tokens "
                                f"(prompt + output): shorten the prompt", param="prompt", code="prompt_too_long")
        max_tokens = body.max_tokens or min(s.default_max_tokens, ctx - len(ids))
        if len(ids) + max_tokens > ctx:
            raise APIError(422, f"{where} has {len(ids)} tokens and max_tokens is {max_tokens}: more than model "
                                f"{model.name!r}'s context of {ctx} tokens; ask for at most {ctx - len(ids)} tokens",
                           param="max_tokens", code="context_length_exceeded")
        for _ in range(body.n):
            rows.append(GenerationRequest(prompt, max_tokens, body.temperature, body.top_p, body.top_k,
                                          body.repetition_penalty, (*stops, *body.stops), body.seed,
                                          prompt_ids=ids, group=group))
    return rows


def usage(rows: list[GenerationRequest], results: list[Generation]) -> dict:
    prompt = sum(len(r.prompt_ids) for i, r in enumerate(rows) if i == 0 or r.prompt_ids is not rows[i - 1].prompt_ids)
    completion = sum(g.completion_tokens for g in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class LeadingSpace:
    """Chat replies follow "Assistant:"; drop the whitespace before the first visible character of each row."""

    def __init__(self, n: int) -> None:
        self.started = [False] * n

    def __call__(self, row: int, piece: str) -> str:
        if not self.started[row]:
            piece = piece.lstrip()
            self.started[row] = bool(piece)
        return piece


async def stream_events(state, request: Request, model: Model, rows: list[GenerationRequest], *,
                        head: list[dict], piece_chunk: Callable[[int, str], dict],
                        finish_chunk: Callable[[int, str], dict], usage_chunk: Callable[[dict], dict] | None,
                        clean: Callable[[int, str], str] | None = None) -> StreamingResponse:
    """Queue the rows, then stream their text as server-sent events; the job is cancelled (its slot freed)
    as soon as the client goes away or the request times out."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = Job("generate", rows, loop, on_text=lambda row, piece: events.put_nowait((row, piece)))
    job.future.add_done_callback(lambda _: events.put_nowait(None))
    state.submit(model, job)  # 429 / 503 are answered before the stream starts
    deadline = loop.time() + state.settings.request_timeout_s

    async def body() -> AsyncIterator[str]:
        try:
            for chunk in head:
                yield sse(chunk)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    job.cancel()
                    state.metrics.rejected.labels("timeout").inc()
                    yield sse(error_body(504, f"the request did not finish within "
                                              f"{state.settings.request_timeout_s:g} s (--request-timeout)",
                                         code="timeout"))
                    return
                try:
                    event = await asyncio.wait_for(events.get(), min(remaining, 1.0))
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if event is None:
                    break
                row, piece = event
                piece = clean(row, piece) if clean else piece
                if piece:
                    yield sse(piece_chunk(row, piece))
            error = job.future.exception()
            if error is not None:
                yield sse(error_body(500, internal_error(error, "generation failed")))
                return
            results = job.future.result()
            for i, g in enumerate(results):
                yield sse(finish_chunk(i, g.finish_reason))
            if usage_chunk is not None:
                yield sse(usage_chunk(usage(rows, results)))
            yield sse("[DONE]")
        finally:
            job.cancel()  # a finished job ignores it; a running one stops at its next token

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def add_routes(app: FastAPI, state) -> None:
    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        model = state.model(body.model, "generate")
        prompts = body.prompts
        if not prompts:
            raise APIError(422, "prompt is an empty list", param="prompt", code="empty_prompt")
        rows = await run_in_threadpool(generation_rows, state, model, prompts, body)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list[dict], **extra) -> dict:
            return {"id": rid, "object": "text_completion", "created": created, "model": model.name,
                    "system_fingerprint": FINGERPRINT, "choices": choices, **extra}

        if body.stream:
            head = [chunk([{"index": i, "text": rows[i].prompt, "logprobs": None, "finish_reason": None}])
                    for i in range(len(rows))] if body.echo else []
            return await stream_events(
                state, request, model, rows, head=head,
                piece_chunk=lambda i, t: chunk([{"index": i, "text": t, "logprobs": None, "finish_reason": None}]),
                finish_chunk=lambda i, r: chunk([{"index": i, "text": "", "logprobs": None, "finish_reason": r}]),
                usage_chunk=(lambda u: chunk([], usage=u)) if body.include_usage else None)
        results = await state.run(model, Job("generate", rows, asyncio.get_running_loop()))
        choices = [{"index": i, "text": (r.prompt if body.echo else "") + g.text, "logprobs": None,
                    "finish_reason": g.finish_reason} for i, (r, g) in enumerate(zip(rows, results))]
        return chunk(choices, usage=usage(rows, results))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        model = state.model(body.model, "generate")
        try:
            prompt = format_chat(body.conversation())
        except ValueError as e:
            raise APIError(422, str(e), param="messages", code="invalid_value") from None
        rows = await run_in_threadpool(generation_rows, state, model, [prompt], body, CHAT_STOP)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list[dict], **extra) -> dict:
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model.name,
                    "system_fingerprint": FINGERPRINT, "choices": choices, **extra}

        def delta(i: int, d: dict, finish: str | None = None) -> dict:
            return chunk([{"index": i, "delta": d, "logprobs": None, "finish_reason": finish}])

        if body.stream:
            return await stream_events(
                state, request, model, rows,
                head=[delta(i, {"role": "assistant", "content": ""}) for i in range(len(rows))],
                piece_chunk=lambda i, t: delta(i, {"content": t}),
                finish_chunk=lambda i, r: delta(i, {}, r),
                usage_chunk=(lambda u: chunk([], usage=u)) if body.include_usage else None,
                clean=LeadingSpace(len(rows)))
        results = await state.run(model, Job("generate", rows, asyncio.get_running_loop()))
        choices = [{"index": i, "message": {"role": "assistant", "content": g.text.lstrip()}, "logprobs": None,
                    "finish_reason": g.finish_reason} for i, g in enumerate(results)]
        return {"id": rid, "object": "chat.completion", "created": created, "model": model.name,
                "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage(rows, results)}
