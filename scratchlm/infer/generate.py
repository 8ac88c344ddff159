"""Text generation for scratchlm models: batched, KV-cached, reproducible.

How a batch is decoded
----------------------
Prompts of different lengths are **left-padded** to the longest one, so every row's next token is read
from the last column. An attention mask hides the padding and per-row ``position_ids`` start each row at
rotary position 0, so a row's tokens are the same as when it is generated alone (greedy; sampling draws
from one generator shared by the batch). The prompt is run once (prefill) into a pre-allocated
``KVCache``; after that the model sees one new token per row per step. A row that emits a stop token is
finished: it is fed padding until every row is done or ``max_new_tokens`` is reached.

Logits processing (fp32, in this order): repetition penalty, no-repeat-n-gram ban, then greedy argmax
(``temperature == 0``) or temperature -> top-k -> top-p -> multinomial sampling with a
``torch.Generator`` seeded from ``SamplingConfig.seed``.

Public API: ``SamplingConfig``, ``generate`` (token ids), ``stream`` and ``generate_text`` (text, needs a
``scratchlm.tokenizer.Tokenizer``), and the small logits helpers ``apply_repetition_penalty``,
``top_k_filter``, ``top_p_filter``, ``banned_ngram_tokens``, ``sample_next``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..model.transformer import KVCache, Transformer
from ..tokenizer import IncrementalDecoder
from . import decode_pack, engine


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set of tokens whose probability sums to >= top_p
    repetition_penalty: float = 1.0  # CTRL-style; > 1 discourages tokens already in prompt + output
    no_repeat_ngram_size: int = 0  # > 0: never produce an n-gram that already occurs in prompt + output
    stop_token_ids: tuple[int, ...] = ()  # end a row (not included in the output); eos is added by the caller
    stop_strings: tuple[str, ...] = ()  # text-level stops: honoured by stream() and generate_text()
    seed: int | None = None  # None = a fresh random seed on every call
    use_cache: bool = True  # False = recompute the whole sequence every step (slow; a reference)

    def validate(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"SamplingConfig.{msg}")

        check(is_int(self.max_new_tokens) and self.max_new_tokens >= 0,
              f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        check(isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
              and self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        check(self.top_k is None or (is_int(self.top_k) and self.top_k >= 1),
              f"top_k must be None or an integer >= 1, got {self.top_k!r}")
        check(self.top_p is None or (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1),
              f"top_p must be None or in (0, 1], got {self.top_p!r}")
        check(isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
              and self.repetition_penalty > 0,
              f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}")
        check(is_int(self.no_repeat_ngram_size) and self.no_repeat_ngram_size >= 0,
              f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {self.no_repeat_ngram_size!r}")
        check(all(is_int(t) and t >= 0 for t in self.stop_token_ids),
              f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")
        check(all(isinstance(s, str) and s for s in self.stop_strings),
              f"stop_strings must be non-empty strings, got {self.stop_strings!r}")
        check(self.seed is None or is_int(self.seed), f"seed must be None or an integer, got {self.seed!r}")


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---- logits helpers: (B, V) float logits in, (B, V) out -------------------------------------------------

def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL penalty for tokens with ``seen[b, v] == True``: positive logits / penalty, negative * penalty."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set everything below the k-th largest logit of each row to -inf (ties with the k-th are kept)."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probabilities sum to >= p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the strictly more likely tokens
    drop_sorted = mass_before >= p  # the most likely token always has mass_before == 0, so it stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def banned_ngram_tokens(seq: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in ``seq`` (the no-repeat-n-gram rule)."""
    if n <= 0 or len(seq) < n - 1:
        return []
    prefix = list(seq[len(seq) - (n - 1):]) if n > 1 else []
    return sorted({seq[i + n - 1] for i in range(len(seq) - n + 1) if list(seq[i:i + n - 1]) == prefix})


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per row, shape (B,): argmax if temperature == 0, else temperature/top-k/top-p sampling."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# ---- the decoding engine ----------------------------------------------------------------------------------

def causal_padding_mask(valid: torch.Tensor, q_start: int) -> torch.Tensor:
    """(B, 1, T, S) "may attend" mask for queries at columns q_start..S-1 over keys 0..S-1.

    Causal, padding keys hidden. Each position may always attend to itself, so a padding query never has
    an all-False row (SDPA would give NaN on some backends, and NaN in padding K/V poisons real rows)."""
    S = valid.size(1)
    q = torch.arange(q_start, S, device=valid.device).unsqueeze(1)
    k = torch.arange(S, device=valid.device).unsqueeze(0)
    allowed = ((k <= q) & valid[:, None, :]) | (k == q)  # (B, T, S)
    return allowed.unsqueeze(1)


def check_prompts(prompts: list[list[int]], vocab_size: int) -> None:
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; give at least one token (e.g. BOS or EOS)")
        if min(p) < 0 or max(p) >= vocab_size:
            raise ValueError(f"prompt {i} has a token id outside [0, {vocab_size}) (the vocabulary)")


def left_pad(prompts: list[list[int]], pad_id: int, total: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, valid), both (B, total): each prompt ends at column max(len) - 1; pad_id / False elsewhere."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), total), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((len(prompts), total), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):longest] = torch.tensor(p, dtype=torch.long)
        valid[i, longest - len(p):longest] = True
    return ids, valid


def last_logits(model: Transformer, ids: torch.Tensor, valid: torch.Tensor, start: int,
                 cache: KVCache | None) -> torch.Tensor:
    """fp32 logits (B, V) for the token after column S-1, where valid is (B, S) and ids holds columns start..S-1.

    Per-row position ids count only valid columns (a left-padded row starts at rotary position 0); with a
    cache, the new columns are written at cache.pos (== start) and cache.pos is advanced to S."""
    end = valid.size(1)
    plain = cache is not None and start == cache.pos and bool(valid.all())
    native = getattr(cache, "engine", None)
    if native is not None and (ids.shape[1] == 1 or cache.packs is None):
        # The native engine (one C call per step); fp32 prompts longer than a token still prefill through
        # PyTorch's GEMMs, which are faster there. Both write the cache in one layout.
        positions = None if plain else (valid.cumsum(dim=1) - 1).clamp(min=0)[:, start:end]
        logits = engine.forward(model, native, ids, cache, start, positions, None if plain else valid)
        cache.pos = end
        return logits
    if plain:
        # No padding (prompts of one length): positions are the columns and attention is plain causal, which
        # the model does without building a mask or gathering rotary rows -- most of a batch-1 decode step's
        # overhead at small sizes. Same result as the masked path (tested).
        hidden = decode_pack.forward(model, ids, cache=cache)
        if cache is not None:
            cache.pos = end
    else:
        hidden = padded_hidden(model, ids, valid, start, cache)
    return decode_pack.logits(model, hidden[:, -1], cache).float()


def padded_hidden(model: Transformer, ids: torch.Tensor, valid: torch.Tensor, start: int,
                  cache: KVCache | None) -> torch.Tensor:
    """Final hidden states (B, S - start, d) of columns start..S-1 of left-padded rows (valid is (B, S)), with
    per-row position ids and the padding mask; a cache is written at cache.pos (== start) and advanced to S."""
    end = valid.size(1)
    positions = (valid.cumsum(dim=1) - 1).clamp(min=0)[:, start:end]
    hidden = decode_pack.forward(model, ids, position_ids=positions, mask=causal_padding_mask(valid, start),
                                 cache=cache)
    if cache is not None:
        cache.pos = end
    return hidden


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _BatchDecoder:
    """State of one batched generation. ``step()`` returns one new token per row (None = row finished)."""

    @torch.inference_mode()
    def __init__(self, model: Transformer, prompts: list[list[int]], cfg: SamplingConfig, *,
                 pad_id: int, eos_id: int | None) -> None:
        cfg.validate()
        model_cfg = model.cfg
        check_prompts(prompts, model_cfg.vocab_size)
        longest = max(len(p) for p in prompts)
        total = longest + cfg.max_new_tokens
        if total > model_cfg.block_size:
            raise ValueError(
                f"longest prompt ({longest} tokens) + max_new_tokens ({cfg.max_new_tokens}) = {total} "
                f"exceeds the model's context length (block_size) {model_cfg.block_size}; shorten the prompt or "
                f"lower max_new_tokens"
            )
        param = next(model.parameters())
        device, B = param.device, len(prompts)
        self.model, self.cfg, self.pad_id = model, cfg, pad_id
        self.stop_ids = set(cfg.stop_token_ids) | ({eos_id} if eos_id is not None else set())
        self.seqs = [list(p) for p in prompts]  # prompt + emitted tokens, no padding (for the n-gram ban)
        self.finished = [False] * B
        self.steps = 0
        # Token buffer, left-padded prompts then one column per step; valid = not padding.
        self.ids, self.valid = left_pad(prompts, pad_id, total, device)
        self.length = longest  # filled columns
        self.fed = 0  # columns already in the KV cache
        self.cache = decode_pack.DecodeCache(model, B, total, device, param.dtype) if cfg.use_cache else None
        self.seen = None
        if cfg.repetition_penalty != 1.0:
            self.seen = torch.zeros((B, model_cfg.vocab_size), dtype=torch.bool, device=device)
            for i, p in enumerate(prompts):
                self.seen[i, p] = True
        self.generator = torch.Generator(device=device)
        if cfg.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(cfg.seed)

    @property
    def done(self) -> bool:
        return all(self.finished) or self.steps >= self.cfg.max_new_tokens

    def finish(self, row: int) -> None:
        self.finished[row] = True

    def _next_logits(self) -> torch.Tensor:
        """fp32 logits (B, V) for the token after the last filled column."""
        start = self.fed if self.cache is not None else 0
        end = self.length
        logits = last_logits(self.model, self.ids[:, start:end], self.valid[:, :end], start, self.cache)
        if self.cache is not None:
            self.fed = end
        return logits

    @torch.inference_mode()
    def step(self) -> list[int | None]:
        if self.done:
            raise RuntimeError("generation is already finished")
        cfg = self.cfg
        logits = self._next_logits()
        if self.seen is not None:
            logits = apply_repetition_penalty(logits, self.seen, cfg.repetition_penalty)
        if cfg.no_repeat_ngram_size > 0:
            for row, seq in enumerate(self.seqs):
                banned = banned_ngram_tokens(seq, cfg.no_repeat_ngram_size)
                if banned and not self.finished[row]:
                    logits[row, banned] = float("-inf")
        tokens = sample_next(logits, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                             generator=self.generator)
        out: list[int | None] = []
        for row, tok in enumerate(tokens.tolist()):
            if self.finished[row]:
                out.append(None)
            elif tok in self.stop_ids:
                self.finished[row] = True
                out.append(None)
            else:
                self.seqs[row].append(tok)
                out.append(tok)
        # Finished rows are fed padding from now on; the column is still "valid" (it is theirs alone).
        feed = torch.tensor([self.pad_id if t is None else t for t in out], device=self.ids.device)
        self.ids[:, self.length] = feed
        self.valid[:, self.length] = True
        if self.seen is not None:
            self.seen.scatter_(1, feed.unsqueeze(1), True)
        self.length += 1
        self.steps += 1
        return out


def _generate_ids(model, prompts, cfg, *, pad_id, eos_id, callback) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]
    if not prompts or cfg.max_new_tokens == 0:
        cfg.validate()
        return out
    with eval_mode(model):
        dec = _BatchDecoder(model, prompts, cfg, pad_id=pad_id, eos_id=eos_id)
        while not dec.done:
            for row, tok in enumerate(dec.step()):
                if tok is None:
                    continue
                out[row].append(tok)
                if callback is not None and callback(row, tok):
                    dec.finish(row)
    return out


@torch.inference_mode()
def generate(model: Transformer, prompts: list[list[int]], cfg: SamplingConfig, *, pad_id: int = 0,
             eos_id: int | None = None,
             callback: Callable[[int, int], bool | None] | None = None) -> list[list[int]]:
    """Generate up to ``cfg.max_new_tokens`` new tokens for each prompt (lists of token ids).

    Returns only the new tokens of each row. A row ends when it samples ``eos_id`` or one of
    ``cfg.stop_token_ids``; that stop token is **not** included in the result. ``callback(row, token_id)``
    is called for every returned token as soon as it is sampled (streaming); if it returns True, that
    row stops after this token. ``pad_id`` only fills the left padding (it is never attended to).
    ``cfg.stop_strings`` are text-level and need a tokenizer: use ``generate_text`` or ``stream``.
    The model runs in eval mode (its training flag is restored afterwards).
    """
    if cfg.stop_strings:
        raise ValueError("generate() works on token ids and cannot honour stop_strings; use "
                         "generate_text() or stream(), which decode text")
    return _generate_ids(model, prompts, cfg, pad_id=pad_id, eos_id=eos_id, callback=callback)


# ---- text ---------------------------------------------------------------------------------------------

class _StopStringFilter:
    """Streams text through, holding back any tail that could be the start of a stop string."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stops = tuple(stop_strings)
        self.pending = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """Text that is safe to emit now; sets ``stopped`` (and drops the stop string) on a match."""
        if self.stopped:
            return ""
        text = self.pending + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.pending = True, ""
            return text[:min(hits)]
        hold = next((i for i in range(len(text)) if any(s.startswith(text[i:]) for s in self.stops)),
                    len(text))
        self.pending = text[hold:]
        return text[:hold]

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _encode_prompt(tokenizer, prompt: str, bos: bool) -> list[int]:
    # the prompt is user text: special-token strings in it stay text (they may not inject control tokens)
    ids = tokenizer.encode(prompt, bos=bos, allow_special=False)
    if not ids:
        raise ValueError("the prompt encodes to no tokens; pass bos=True or a non-empty prompt")
    return ids


def stream(model: Transformer, tokenizer, prompt: str, cfg: SamplingConfig, *,
           bos: bool = False) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece (batch 1, eos = ``tokenizer.eos_id``).

    Text is decoded with ``IncrementalDecoder`` (no half UTF-8 characters). With ``cfg.stop_strings``,
    text that could begin a stop string is held back until it is known not to be one; the first stop
    string ends the stream and is not yielded. The model stays in eval mode while the generator runs.
    """
    ids = _encode_prompt(tokenizer, prompt, bos)
    if cfg.max_new_tokens == 0:
        cfg.validate()
        return
    decoder = IncrementalDecoder(tokenizer)
    stops = _StopStringFilter(cfg.stop_strings)
    with eval_mode(model):
        dec = _BatchDecoder(model, [ids], cfg, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
        while not dec.done:
            (tok,) = dec.step()
            if tok is None:
                break
            text = stops.push(decoder.step(tok))
            if text:
                yield text
            if stops.stopped:
                return
        text = stops.push(decoder.flush()) + stops.flush()
        if text:
            yield text


def generate_text(model: Transformer, tokenizer, prompts: list[str], cfg: SamplingConfig, *,
                  bos: bool = False) -> list[str]:
    """Continuations of ``prompts`` as text (batched; eos = ``tokenizer.eos_id``; stop strings cut the text
    before the stop string and end that row early)."""
    ids = [_encode_prompt(tokenizer, p, bos) for p in prompts]
    decoders = [IncrementalDecoder(tokenizer) for _ in prompts]
    filters = [_StopStringFilter(cfg.stop_strings) for _ in prompts]
    texts = [""] * len(prompts)

    def on_token(row: int, tok: int) -> bool:
        texts[row] += filters[row].push(decoders[row].step(tok))
        return filters[row].stopped

    _generate_ids(model, ids, cfg, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, callback=on_token)
    for row, f in enumerate(filters):
        texts[row] += f.push(decoders[row].flush()) + f.flush()
    return texts
