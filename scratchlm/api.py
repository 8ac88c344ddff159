"""The Python API: ``scratchlm.load(DIR)`` -> a ``Model`` that does what its folder was trained for.

    import scratchlm

    lm = scratchlm.load("runs/imdb_lm/model")
    lm.generate("This movie was", max_tokens=32, temperature=0.8, seed=0).text
    for piece in lm.stream("This movie was", max_tokens=32):
        print(piece, end="")
    lm.chat([{"role": "user", "content": "Recommend a film."}], max_tokens=40).text

    clf = scratchlm.load("runs/imdb/decoder-full/model")
    clf.classify(["A wonderful film.", "Dull and far too long."])   # [Classification(label="pos", ...), ...]

    mt = scratchlm.load("runs/tatoeba_en_zh/decoder/model")
    mt.translate("This is an example.")                          # also summarize() for summarization models

``load`` takes a model folder or a published model name and goes through the one model folder loader
(``scratchlm.model.folder``); the ``task`` recorded in the folder's ``config.json`` says what the model can
do. A method the task does not allow raises ``TaskError`` naming what the model can do. Lists are run as
batches (one batched forward per step, per-row stop rules). Every method holds the model's lock while it
computes, so one ``Model`` may be shared by threads; calls from different threads run one after the other.

Chat template (``scratchlm-plain-v1``): the models are pretrained on plain text with ``<|eos|>`` between
documents and never saw a chat format, so chat is a plain-text transcript the model can continue:

    {system messages, joined by blank lines}\\n\\n      (only if there are system messages)
    User: {content}\\n
    Assistant: {content}\\n
    ...
    Assistant:

The reply is generated after the final ``Assistant:``, leading spaces removed; it ends at ``<|eos|>`` (the
end-of-text token of pretraining, the only special token the template relies on), at a new ``\\nUser:`` or
``\\nAssistant:`` line, at a caller's stop string, or at ``max_tokens``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .infer.classify import Classifier
from .infer.generate import SamplingConfig, _StopStringFilter, generate
from .infer.seq2seq import DecodeConfig, Seq2SeqModel
from .model.folder import LoadedModel, TaskError, load_model, read_model_config, task_of
from .tokenizer import IncrementalDecoder

METHODS = {"lm": ("generate",), "classify": ("classify",), "translate": ("translate",),
           "summarize": ("summarize",)}  # what a model of each task can do
VIEWS = {"classify": Classifier, "translate": Seq2SeqModel, "summarize": Seq2SeqModel}  # what they add to a LoadedModel
CHAT_TEMPLATE = "scratchlm-plain-v1"
CHAT_STOP = ("\nUser:", "\nAssistant:")
CHAT_ROLES = ("system", "user", "assistant")


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (<|eos|> or a stop string), "length" (max_tokens) or "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Classification:
    label: str
    probability: float
    probabilities: dict[str, float]


_groups = itertools.count()


@dataclass
class GenerationRequest:
    """One row of a generation batch. ``on_text(piece)`` streams text as it is decoded (called from the
    computing thread); ``cancelled()`` returning True ends the row at its next token."""

    prompt: str
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    prompt_ids: list[int] | None = None  # the encoded prompt when the caller already has it
    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] | None = None
    group: int = field(default_factory=lambda: next(_groups))  # seeded rows batch only within their group

    def batch_key(self) -> tuple:
        """Rows with equal keys may share one batch (one SamplingConfig, one random generator).

        Greedy rows do not depend on their batch; a seeded sampled row must only share its batch with the rows
        of its own request, or its output would depend on the other requests."""
        if self.temperature == 0:
            return ("greedy", self.repetition_penalty)
        seeded = ("seed", self.seed, self.group) if self.seed is not None else ("random",)
        return (self.temperature, self.top_p, self.top_k, self.repetition_penalty, *seeded)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.max_tokens, temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p, repetition_penalty=self.repetition_penalty,
                              stop_strings=tuple(self.stop), seed=self.seed)


def model_task(path: str | Path) -> str:
    """The task recorded in a model folder's config.json ("lm" when none is recorded)."""
    folder, config = read_model_config(path)
    return task_of(config, folder)


def load(path: str | Path, *, device: str = "cpu", name: str | None = None) -> Model:
    """Load a model (a folder or a published name): a language model, classifier, translation or
    summarization model."""
    loaded = load_model(path, device)
    task_view = VIEWS.get(loaded.task)
    return Model(task_view.view(loaded) if task_view else loaded, loaded.task, name)


def format_chat(messages: Sequence[dict]) -> str:
    """The ``scratchlm-plain-v1`` prompt of a conversation (see the module docstring)."""
    if not messages:
        raise ValueError("messages is empty; give at least one {'role': 'user', 'content': ...}")
    system, turns = [], []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in CHAT_ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        if role == "system":
            system.append(content.strip())
        else:
            turns.append(f"{'User' if role == 'user' else 'Assistant'}: {content.strip()}\n")
    if not turns:
        raise ValueError("messages has no user or assistant message")
    head = "\n\n".join(s for s in system if s)
    return (head + "\n\n" if head else "") + "".join(turns) + "Assistant:"


class Model:
    """A loaded model folder and the tasks it can do; see the module docstring."""

    def __init__(self, loaded: LoadedModel, task: str, name: str | None = None) -> None:
        if loaded.tokenizer is not None:
            # everything this object encodes is caller-supplied text (prompts, texts to classify / translate /
            # summarize): special-token strings in it are plain text, never control tokens ("<|eos|>" in a
            # prompt must not end the document); task prompts add their special tokens by id
            loaded.tokenizer = loaded.tokenizer.plain_text()
        self.loaded, self.task = loaded, task
        self.folder: Path = Path(loaded.folder)
        self.config: dict = loaded.config
        self.tokenizer = loaded.tokenizer
        self.name = name or default_name(self.folder)
        self.tasks: tuple[str, ...] = METHODS[task]
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, task={self.task!r}, folder='{self.folder}')"

    # -- what it is ------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int | None:
        """Tokens the model reads at most (prompt + output for generation; the text for a classifier)."""
        if self.task == "classify":
            return self.config.get("max_length")
        cfg = getattr(self.loaded.model, "cfg", None)
        return getattr(cfg, "block_size", None)

    @property
    def label_names(self) -> list[str] | None:
        return list(self.config["label_names"]) if self.task == "classify" else None

    def info(self) -> dict:
        out = {"id": self.name, "task": self.task, "tasks": list(self.tasks), "context_length": self.context_length,
               "folder": str(self.folder)}
        if self.task == "classify":
            out["labels"] = self.label_names
        if self.task == "translate":
            out["source_lang"], out["target_lang"] = self.config.get("src_lang"), self.config.get("tgt_lang")
        if "generate" in self.tasks:
            out["chat_template"] = CHAT_TEMPLATE
        return out

    def _require(self, method: str) -> None:
        if method not in self.tasks:
            raise TaskError(f"model {self.name!r} ({self.folder}) is a {self.task} model: it can "
                            f"{' / '.join(self.tasks)}, not {method}")

    def encode(self, text: str) -> list[int]:
        """Prompt token ids (no <|bos|>, as in pretraining, where documents follow an <|eos|>); special-token
        strings in ``text`` are encoded as plain text."""
        if self.tokenizer is None:
            raise TaskError(f"model {self.name!r} has no tokenizer (a classical baseline)")
        return self.tokenizer.encode(text, allow_special=False)

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[str], *, max_tokens: int = 128, temperature: float = 1.0,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float = 1.0,
                 stop: str | Sequence[str] | None = None, seed: int | None = None
                 ) -> Generation | list[Generation]:
        """Continue one prompt (-> ``Generation``) or a list of prompts (-> a list, run as one batch)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        group = next(_groups)
        reqs = [GenerationRequest(p, max_tokens, temperature, top_p, top_k, repetition_penalty, stops, seed,
                                  group=group) for p in prompts]
        out = self.generate_batch(reqs)
        return out[0] if isinstance(prompt, str) else out

    def chat(self, messages: Sequence[dict], *, stop: str | Sequence[str] | None = None, **kw) -> Generation:
        """The assistant's reply to ``messages`` (``scratchlm-plain-v1`` template; ``generate``'s options)."""
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        out = self.generate(format_chat(messages), stop=(*CHAT_STOP, *stops), **kw)
        out.text = out.text.lstrip()
        return out

    def stream(self, prompt: str, **kw) -> Iterator[str]:
        """Yield the continuation of ``prompt`` piece by piece (``generate``'s options).

        Generation runs in a helper thread while this generator is consumed; closing the generator early
        stops it at the next token."""
        import queue

        pieces: queue.Queue = queue.Queue()
        stop_flag = threading.Event()
        stops = kw.pop("stop", None)
        stops = (stops,) if isinstance(stops, str) else tuple(stops or ())
        req = GenerationRequest(prompt, stop=stops, on_text=pieces.put, cancelled=stop_flag.is_set, **kw)
        self._require("generate")
        self.check_request(req)
        done = object()

        def run() -> None:
            try:
                self.generate_batch([req])
                pieces.put(done)
            except BaseException as e:  # handed to the consumer
                pieces.put(e)

        worker = threading.Thread(target=run, name=f"scratchlm-stream-{self.name}", daemon=True)
        worker.start()
        try:
            while (item := pieces.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop_flag.set()
            worker.join()

    def check_request(self, req: GenerationRequest) -> list[int]:
        """Validate one generation row; returns its prompt ids (and stores them on the request)."""
        req.sampling().validate()
        if req.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {req.max_tokens}")
        ids = req.prompt_ids if req.prompt_ids is not None else self.encode(req.prompt)
        if not ids:
            raise ValueError("the prompt is empty; give some text to continue")
        ctx = self.context_length
        if len(ids) + req.max_tokens > ctx:
            raise ValueError(f"the prompt has {len(ids)} tokens and max_tokens is {req.max_tokens}: "
                             f"{len(ids) + req.max_tokens} > the model's context length {ctx}; shorten the "
                             f"prompt or lower max_tokens to at most {max(ctx - len(ids), 0)}")
        req.prompt_ids = ids
        return ids

    def can_share_batch(self, batch: Sequence[GenerationRequest], req: GenerationRequest) -> bool:
        """May ``req`` join ``batch`` (same sampling key, and the longest prompt + the largest max_tokens fit)?"""
        if not batch:
            return True
        if req.batch_key() != batch[0].batch_key():
            return False
        longest = max(len(r.prompt_ids or ()) for r in (*batch, req))
        most = max(r.max_tokens for r in (*batch, req))
        return longest + most <= self.context_length

    def generate_batch(self, requests: Sequence[GenerationRequest], *, max_batch_size: int = 64
                       ) -> list[Generation]:
        """Run generation rows, batching those that may share a batch; results in the order of ``requests``."""
        self._require("generate")
        for r in requests:
            self.check_request(r)
        batches: list[list[int]] = []
        for i, r in enumerate(requests):
            for b in batches:
                if len(b) < max_batch_size and self.can_share_batch([requests[j] for j in b], r):
                    b.append(i)
                    break
            else:
                batches.append([i])
        out: list[Generation | None] = [None] * len(requests)
        for b in batches:
            for i, g in zip(b, self._run_batch([requests[i] for i in b])):
                out[i] = g
        return out

    def _run_batch(self, reqs: list[GenerationRequest]) -> list[Generation]:
        tok = self.tokenizer
        n = len(reqs)
        decoders = [IncrementalDecoder(tok) for _ in reqs]
        filters = [_StopStringFilter(r.stop) for r in reqs]
        texts, counts, reasons = [""] * n, [0] * n, [None] * n

        def emit(row: int, piece: str) -> None:
            if piece:
                texts[row] += piece
                if reqs[row].on_text is not None:
                    reqs[row].on_text(piece)

        def on_token(row: int, token: int) -> bool:
            r = reqs[row]
            counts[row] += 1
            emit(row, filters[row].push(decoders[row].step(token)))
            if filters[row].stopped:
                reasons[row] = "stop"
            elif r.cancelled is not None and r.cancelled():
                reasons[row] = "cancelled"
            elif counts[row] >= r.max_tokens:
                reasons[row] = "length"
            return reasons[row] is not None

        cfg = reqs[0].sampling()
        cfg.max_new_tokens, cfg.stop_strings = max(r.max_tokens for r in reqs), ()
        with self._lock, torch.inference_mode():
            generate(self.loaded.model, [r.prompt_ids for r in reqs], cfg, pad_id=tok.pad_id, eos_id=tok.eos_id,
                     callback=on_token)
        for row in range(n):
            if reasons[row] != "cancelled":
                emit(row, filters[row].push(decoders[row].flush()) + filters[row].flush())
            reasons[row] = reasons[row] or "stop"  # the row sampled <|eos|>
        return [Generation(texts[i], reasons[i], len(reqs[i].prompt_ids), counts[i]) for i in range(n)]

    # -- classification --------------------------------------------------------------------------------
    def classify(self, texts: str | Sequence[str], *, batch_size: int = 32
                 ) -> Classification | list[Classification]:
        """Label and class probabilities of one text or a list of texts (a list runs in batches)."""
        self._require("classify")
        items = [texts] if isinstance(texts, str) else list(texts)
        with self._lock, torch.inference_mode():
            probs = self.loaded.predict_proba(items, batch_size=batch_size)
        names = self.label_names
        out = []
        for p in probs:
            j = int(p.argmax())
            out.append(Classification(names[j], float(p[j]), {n: float(x) for n, x in zip(names, p)}))
        return out[0] if isinstance(texts, str) else out

    # -- translation / summarization -------------------------------------------------------------------
    def translate(self, texts: str | Sequence[str], *, source_lang: str | None = None,
                  target_lang: str | None = None, num_beams: int | None = None,
                  max_tokens: int | None = None) -> str | list[str]:
        """Translate one text or a list (beam search; the model's direction, checked against the given one)."""
        self._require("translate")
        self.loaded.check_direction(source_lang, target_lang)
        return self._seq2seq(texts, num_beams, max_tokens)

    def summarize(self, texts: str | Sequence[str], *, num_beams: int | None = None,
                  max_tokens: int | None = None) -> str | list[str]:
        """Summarize one text or a list (beam search)."""
        self._require("summarize")
        return self._seq2seq(texts, num_beams, max_tokens)

    def _seq2seq(self, texts, num_beams, max_tokens):
        items = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is empty")
        decode = DecodeConfig(**self.config.get("decode", {}))
        if max_tokens is not None:
            decode.max_new_tokens = max_tokens
        with self._lock, torch.inference_mode():
            out = self.loaded.generate(items, decode, num_beams=num_beams)
        return out[0] if isinstance(texts, str) else out


def default_name(folder: Path) -> str:
    """A model's name from its folder: the run folder's name for ``<run>/model`` and ``<run>/checkpoints/...``."""
    parts = [p for p in Path(folder).resolve().parts if p not in ("/", "")]
    while len(parts) > 1 and (parts[-1] in ("model", "checkpoints") or parts[-1].startswith("step_")):
        parts.pop()
    return parts[-1] if parts else "model"
