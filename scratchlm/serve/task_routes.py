"""Task endpoints: ``POST /v1/classify`` (labels with probabilities), ``/v1/translate``, ``/v1/summarize``.

Each takes ``{"model": NAME (optional when one served model does the task), "input": text or [texts]}``;
translate and summarize also take ``num_beams`` and ``max_tokens`` (and translate ``source_lang`` /
``target_lang``, checked against the model's direction). Answers: ``{"object": "list", "model", "data": [...]}``
in the order of the inputs.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from .batching import Job
from .errors import APIError
from .schemas import ClassifyRequest, SummarizeRequest, TranslateRequest


def check_texts(state, texts: list[str]) -> None:
    s = state.settings
    if not texts:
        raise APIError(422, "input is an empty list; give at least one text", param="input", code="empty_input")
    if len(texts) > s.max_items:
        raise APIError(413, f"input has {len(texts)} texts; this server takes at most {s.max_items} per request "
                            f"(--max-items)", param="input", code="too_many_items")
    for i, t in enumerate(texts):
        where = "input" if len(texts) == 1 else f"input[{i}]"
        if not t.strip():
            raise APIError(422, f"{where} is empty", param="input", code="empty_input")
        if len(t) > s.max_input_chars:
            raise APIError(413, f"{where} has {len(t):,} characters; the limit is {s.max_input_chars:,} "
                                f"(--max-input-chars)", param="input", code="input_too_long")


def seq2seq_options(state, body) -> dict:
    s = state.settings
    if body.num_beams is not None and body.num_beams > s.max_beams:
        raise APIError(422, f"num_beams must be at most {s.max_beams}, got {body.num_beams}", param="num_beams",
                       code="invalid_value")
    if body.max_tokens is not None and not 1 <= body.max_tokens <= s.max_tokens_limit:
        raise APIError(422, f"max_tokens must be between 1 and {s.max_tokens_limit} (--max-tokens-limit), got "
                            f"{body.max_tokens}", param="max_tokens", code="invalid_value")
    return {"num_beams": body.num_beams, "max_tokens": body.max_tokens}


def add_routes(app: FastAPI, state) -> None:
    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest):
        model = state.model(body.model, "classify")
        texts = body.texts
        check_texts(state, texts)
        results = await state.run(model, Job("classify", texts, asyncio.get_running_loop()))
        data = [{"index": i, "label": c.label, "probability": c.probability, "probabilities": c.probabilities}
                for i, c in enumerate(results)]
        return {"object": "list", "model": model.name, "labels": model.label_names, "data": data}

    @app.post("/v1/translate")
    async def translate(body: TranslateRequest):
        model = state.model(body.model, "translate")
        texts = body.texts
        check_texts(state, texts)
        options = seq2seq_options(state, body)
        try:
            src, tgt = model.loaded.check_direction(body.source_lang, body.target_lang)
        except ValueError as e:
            raise APIError(422, str(e), param="target_lang", code="unsupported_direction") from None
        outputs = await state.run(model, Job("translate", texts, asyncio.get_running_loop(), options=options))
        return {"object": "list", "model": model.name, "source_lang": src, "target_lang": tgt,
                "data": [{"index": i, "text": t} for i, t in enumerate(outputs)]}

    @app.post("/v1/summarize")
    async def summarize(body: SummarizeRequest):
        model = state.model(body.model, "summarize")
        texts = body.texts
        check_texts(state, texts)
        options = seq2seq_options(state, body)
        outputs = await state.run(model, Job("summarize", texts, asyncio.get_running_loop(), options=options))
        return {"object": "list", "model": model.name, "data": [{"index": i, "text": t} for i, t in enumerate(outputs)]}
