"""Request bodies (pydantic, strict: a string is not a number, a number is not a string).

OpenAI fields the models cannot honour (``logprobs``, ``best_of`` > 1, ``suffix``, ``tools``, ``logit_bias``,
non-text ``response_format``) are refused with a message instead of being ignored; unknown fields are ignored,
as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Integer fields are bounded, so a huge number is refused (400, naming the field) before it reaches torch or
# numpy ("Overflow when unpacking long long"); the server's own limits (--max-tokens-limit, ...) come after.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit seed


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(None, le=INT32_MAX)  # 1..--max-tokens-limit is checked by the routes
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=INT32_MAX)  # extension (vLLM-style)
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # extension (vLLM-style)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=INT32_MAX)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    logprobs: bool | int | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self):
        unsupported = [name for name, bad in (
            ("logprobs", self.logprobs not in (None, False, 0)),
            ("logit_bias", bool(self.logit_bias)),
            ("presence_penalty", self.presence_penalty not in (None, 0)),
            ("frequency_penalty", self.frequency_penalty not in (None, 0)),
        ) if bad]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)} is not supported by this server (use repetition_penalty "
                             f"for penalties)")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop must be a non-empty string or a list of at most 4 non-empty strings")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=INT32_MAX)
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_supported(self):
        if self.best_of not in (None, 1):
            raise ValueError("best_of is not supported by this server; use n")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by these models")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ContentPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, le=INT32_MAX)
    tools: list | None = None
    response_format: dict | None = None

    @model_validator(mode="after")
    def _chat_supported(self):
        if self.tools:
            raise ValueError("tools are not supported by these models")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise ValueError("response_format other than text is not supported by these models")
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    def conversation(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in self.messages]


class TextsRequest(_Body):
    model: str | None = None  # optional when exactly one served model does the task
    input: str | list[str]

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ClassifyRequest(TextsRequest):
    pass


class Seq2SeqRequest(TextsRequest):
    num_beams: int | None = Field(None, ge=1, le=INT32_MAX)
    max_tokens: int | None = Field(None, le=INT32_MAX)  # 1..--max-tokens-limit is checked by the routes


class TranslateRequest(Seq2SeqRequest):
    source_lang: str | None = None
    target_lang: str | None = None


SummarizeRequest = Seq2SeqRequest
