"""Beam search for sequence-to-sequence models (translation, summarization).

One loop, ``search``, keeps the beams of a batch of inputs; the model is reached only through two functions,
``step`` (the next-token logits of every beam row) and ``reorder`` (make row i continue old row index[i]), so
the decoder-only transformer and the recurrent encoder-decoder baseline share it.

For the decoder (``beam_search``) the prompt is ``<|bos|> source <|sep|>`` and the output is what the model
writes after it, ending with ``<|eos|>``. Prompts are left-padded (padding masked, per-row rotary positions
from 0) as in ``scratchlm.infer.generate``, run once into a KV cache which is then expanded to ``num_beams``
rows per prompt; ``reorder`` is ``KVCache.reorder`` (an ``index_select`` of the cache rows).

Scoring follows Hugging Face ``transformers``:

* a step scores every (beam, token) pair by ``beam logprob + log_softmax(logits)`` (computed in float64, so
  ties between different fp32 logits cannot appear) and keeps the ``2 * num_beams`` best candidates;
* a candidate ending in eos becomes a finished hypothesis only if it ranks among the first ``num_beams``
  candidates; the best ``num_beams`` other candidates become the next beams;
* a hypothesis' score is ``logprob / length ** length_penalty`` where ``logprob`` is the summed log
  probability of its tokens (the eos included) and ``length`` counts its generated tokens (the eos included);
  ``length_penalty`` > 0 favours longer outputs, < 0 shorter ones, 0 ranks by plain log probability;
* ``early_stopping``: ``True`` ends a prompt as soon as ``num_beams`` finished hypotheses exist; ``False`` when
  the best running beam, scored as if it ended now, cannot beat the worst kept hypothesis (a heuristic);
  ``"never"`` only when no running beam can possibly beat it any more (exact, slowest);
* a prompt that reaches its length limit adds its running beams (not ended by eos) as hypotheses.

``min_new_tokens`` forbids eos until that many tokens exist. ``no_repeat_ngram_size`` forbids an n-gram that
already occurs **in the output** (not in the prompt: a summary or a translation may copy the source's n-grams);
both only mask candidates, so ``logprob`` is always the model's own log probability of the tokens.

``num_beams == 1`` is greedy decoding: it returns exactly the tokens of ``generate`` with ``temperature=0``
(``early_stopping`` is then irrelevant; ``no_repeat_ngram_size`` differs, see above).

Lengths: a prompt's output is at most ``cfg.max_new_tokens`` tokens, at most
``int(len(prompt) * max_length_ratio) + max_length_offset`` when a ratio is given (at least 1), and never so
long that prompt + output exceeds the model's context length (``block_size``); a prompt that leaves no room
for output raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..model.transformer import Transformer
from . import decode_pack
from .decode_pack import DecodeCache
from .generate import banned_ngram_tokens, check_prompts, eval_mode, is_int, last_logits, left_pad, padded_hidden

_NEG_INF = float("-inf")


@dataclass
class BeamConfig:
    num_beams: int = 4
    max_new_tokens: int = 128  # eos included
    min_new_tokens: int = 0  # eos is forbidden until this many tokens were generated
    length_penalty: float = 1.0  # score = sum logprob / len ** length_penalty (Hugging Face)
    early_stopping: bool | str = True  # True, False (heuristic) or "never" (see the module docstring)
    no_repeat_ngram_size: int = 0  # > 0: never repeat an n-gram of the output
    eos_id: int | None = None  # None = the eos_id given to beam_search (the tokenizer's)
    num_return_sequences: int = 1  # hypotheses returned per prompt, best first (<= num_beams)
    # Anti-language-model decoding (Li et al. 2016, "A Diversity-Promoting Objective", MMI-antiLM): for the
    # first anti_lm_tokens tokens, score log p(y_t | source, y<t) - anti_lm_weight * log p(y_t | y<t), the
    # second term from the same model given the prompt without its source. Outputs that are likely whatever the
    # source (a frequent training subject line) lose; outputs tied to this source win. 0 = off.
    anti_lm_weight: float = 0.0
    anti_lm_tokens: int = 4

    def validate(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"BeamConfig.{msg}")

        check(is_int(self.num_beams) and self.num_beams >= 1,
              f"num_beams must be an integer >= 1, got {self.num_beams!r}")
        check(is_int(self.max_new_tokens) and self.max_new_tokens >= 1,
              f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        check(is_int(self.min_new_tokens) and 0 <= self.min_new_tokens <= self.max_new_tokens,
              f"min_new_tokens must be an integer in [0, max_new_tokens={self.max_new_tokens!r}], "
              f"got {self.min_new_tokens!r}")
        check(isinstance(self.length_penalty, (int, float)) and not isinstance(self.length_penalty, bool)
              and math.isfinite(self.length_penalty),
              f"length_penalty must be a finite number, got {self.length_penalty!r}")
        check(isinstance(self.early_stopping, bool) or self.early_stopping == "never",
              f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        check(is_int(self.no_repeat_ngram_size) and self.no_repeat_ngram_size >= 0,
              f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {self.no_repeat_ngram_size!r}")
        check(self.eos_id is None or (is_int(self.eos_id) and self.eos_id >= 0),
              f"eos_id must be None or an integer >= 0, got {self.eos_id!r}")
        check(isinstance(self.anti_lm_weight, (int, float)) and not isinstance(self.anti_lm_weight, bool)
              and 0.0 <= self.anti_lm_weight < 1.0, f"anti_lm_weight must be in [0, 1), got {self.anti_lm_weight!r}")
        check(is_int(self.anti_lm_tokens) and self.anti_lm_tokens >= 1,
              f"anti_lm_tokens must be an integer >= 1, got {self.anti_lm_tokens!r}")
        check(is_int(self.num_return_sequences) and self.num_return_sequences >= 1,
              f"num_return_sequences must be an integer >= 1, got {self.num_return_sequences!r}")
        check(not is_int(self.num_beams) or self.num_return_sequences <= self.num_beams,
              f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams})")


@dataclass
class BeamHypothesis:
    tokens: list[int]  # generated tokens, without the prompt and without the eos
    score: float  # logprob / length ** length_penalty
    logprob: float  # sum of the model's log probabilities of the tokens (and of the eos when finished)
    finished: bool = True  # ended with eos (False: stopped by the length limit)


class _Hypotheses:
    """The best ``num_beams`` finished hypotheses of one prompt (Hugging Face ``BeamHypotheses``)."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str) -> None:
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.items: list[BeamHypothesis] = []
        self.worst = math.inf

    def add(self, tokens: list[int], logprob: float, length: int, finished: bool) -> None:
        score = logprob / max(length, 1) ** self.length_penalty
        if len(self.items) < self.num_beams or score > self.worst:
            self.items.append(BeamHypothesis(list(tokens), score, logprob, finished))
            if len(self.items) > self.num_beams:
                worst = min(range(len(self.items)), key=lambda i: self.items[i].score)
                del self.items[worst]
            self.worst = min(h.score for h in self.items)

    def is_done(self, best_running: float, cur_len: int, max_len: int) -> bool:
        """Can no running beam (best summed logprob ``best_running``, ``cur_len`` tokens) still get in?"""
        if len(self.items) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0:
            best = best_running / max_len ** self.length_penalty  # logprobs only fall; longest = best
        else:
            best = best_running / cur_len ** self.length_penalty
        return self.worst >= best

    def best(self, n: int) -> list[BeamHypothesis]:
        return sorted(self.items, key=lambda h: h.score, reverse=True)[:n]


def _row_limits(prompts: list[list[int]], cfg: BeamConfig, block_size: int, ratio: float | None,
                offset: int) -> list[int]:
    limits = []
    for i, p in enumerate(prompts):
        if len(p) >= block_size:
            raise ValueError(f"prompt {i} has {len(p)} tokens, which leaves no room for output in the model's "
                             f"context length (block_size) {block_size}; shorten the source")
        n = cfg.max_new_tokens
        if ratio is not None:
            n = min(n, int(len(p) * ratio) + offset)
        limits.append(max(1, min(n, block_size - len(p))))
    return limits


def check_length_limits(max_length_ratio: float | None, max_length_offset: int) -> None:
    if max_length_ratio is not None and not (
            isinstance(max_length_ratio, (int, float)) and not isinstance(max_length_ratio, bool)
            and math.isfinite(max_length_ratio) and max_length_ratio > 0):
        raise ValueError(f"max_length_ratio must be None or a finite number > 0, got {max_length_ratio!r}")
    if not is_int(max_length_offset):
        raise ValueError(f"max_length_offset must be an integer, got {max_length_offset!r}")


@torch.inference_mode()
def beam_search(model: Transformer, prompts: list[list[int]], cfg: BeamConfig, *, pad_id: int, eos_id: int,
                max_length_ratio: float | None = None, max_length_offset: int = 0,
                source_starts: list[int] | None = None) -> list[list[BeamHypothesis]]:
    """Beam-search continuations of ``prompts`` (token id lists, e.g. ``<|bos|> source <|sep|>``).

    Returns, per prompt, up to ``cfg.num_return_sequences`` hypotheses sorted by score (best first); their
    ``tokens`` exclude the prompt and the eos. ``eos_id`` is used unless ``cfg.eos_id`` is set; ``pad_id``
    only fills padding (never attended to). ``max_length_ratio``/``max_length_offset`` limit a prompt's output
    to ``int(len(prompt) * ratio) + offset`` tokens (see the module docstring). The model runs in eval mode
    (its training flag is restored afterwards).

    A model with a copy head (``model/copy.py``) scores every step by its pointer-generator mixture over the
    prompt's source tokens: those from ``source_starts[i]`` (0 when None) to the prompt's last token, which is
    ``<|sep|>`` and not copied.
    """
    cfg.validate()
    check_length_limits(max_length_ratio, max_length_offset)
    vocab = model.cfg.vocab_size
    eos = cfg.eos_id if cfg.eos_id is not None else eos_id
    for name, value in (("eos_id", eos), ("pad_id", pad_id)):
        if not is_int(value) or not 0 <= value < vocab:
            raise ValueError(f"{name} must be a token id in [0, {vocab}) (the vocabulary), got {value!r}")
    if not prompts:
        return []
    check_prompts(prompts, vocab)
    limits = _row_limits(prompts, cfg, model.cfg.block_size, max_length_ratio, max_length_offset)
    with eval_mode(model):
        hyps = _decoder_search(model, prompts, cfg, pad_id=pad_id, eos_id=eos, limits=limits,
                               source_starts=source_starts or [0] * len(prompts))
    return [h.best(cfg.num_return_sequences) for h in hyps]


def _decoder_search(model: Transformer, prompts: list[list[int]], cfg: BeamConfig, *, pad_id: int, eos_id: int,
                    limits: list[int], source_starts: list[int]) -> list[_Hypotheses]:
    """Prefill the prompts once, give every prompt ``num_beams`` identical cache rows, then ``search``. With
    ``cfg.anti_lm_weight`` a second set of rows decodes the same tokens after the prompts without their
    source (the prefix and ``<|sep|>`` only), whose log probabilities are subtracted (see ``BeamConfig``)."""
    K, total = cfg.num_beams, max(len(p) for p in prompts) + max(limits) - 1  # the last token is never fed back
    rows = _Rows(model, prompts, source_starts, K, total, pad_id)
    if not cfg.anti_lm_weight:
        return search(rows.logits, cfg, eos_id=eos_id, pad_id=pad_id, limits=limits, step=rows.step,
                      reorder=rows.reorder)
    bare = _Rows(model, [p[:s] + p[-1:] for p, s in zip(prompts, source_starts)], source_starts, K, total, pad_id)
    t = 0

    def mixed(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        # the search normalizes this again (log_softmax), and a hypothesis' logprob sums these scores
        return cond.log_softmax(dim=-1) - cfg.anti_lm_weight * uncond.log_softmax(dim=-1)

    def step(tokens: torch.Tensor, live: list[bool]) -> torch.Tensor:
        nonlocal t
        t += 1
        cond = rows.step(tokens, live)
        return mixed(cond, bare.step(tokens, live)) if t < cfg.anti_lm_tokens else cond  # then bare is idle

    def reorder(index: torch.Tensor) -> None:
        rows.reorder(index)
        bare.reorder(index)

    return search(mixed(rows.logits, bare.logits), cfg, eos_id=eos_id, pad_id=pad_id, limits=limits, step=step,
                  reorder=reorder)


class _Rows:
    """The decoder's side of a beam search: ``num_beams`` cache rows per prompt (row b * K + k = beam k of
    prompt b), filled by one prefill; ``logits`` are the first next-token logits, ``step`` feeds one token
    per row and returns the next ones, ``reorder`` makes row i continue old row ``index[i]``."""

    def __init__(self, model: Transformer, prompts: list[list[int]], source_starts: list[int], K: int, total: int,
                 pad_id: int) -> None:
        param = next(model.parameters())
        device, B = param.device, len(prompts)
        self.model, self.device = model, device
        longest = max(len(p) for p in prompts)
        ids, valid = left_pad(prompts, pad_id, total, device)
        self.cache = cache = DecodeCache(model, B, total, device, param.dtype)
        expand = torch.arange(B, device=device).repeat_interleave(K)
        self.copy = None
        if getattr(model, "copy_head", None) is None:
            logits = last_logits(model, ids[:, :longest], valid[:, :longest], 0, cache)
        else:
            cache.engine = None  # the native engine returns logits only; the copy head needs the hidden states
            self.copy = _CopySource(model, prompts, source_starts, ids[:, :longest], valid[:, :longest], cache)
            logits = self.copy.prefill_logits
            self.copy.expand(expand)
        if K > 1:
            cache.reorder(expand)
            logits = logits.index_select(0, expand)
        self.logits = logits
        self.valid = valid.index_select(0, expand)
        self.length = longest  # filled columns

    def step(self, tokens: torch.Tensor, live: list[bool]) -> torch.Tensor:
        self.valid[:, self.length] = torch.tensor(live, device=self.device)  # finished prompts are fed padding
        self.length += 1
        valid = self.valid[:, :self.length]
        if self.copy is not None:
            return self.copy.step(tokens.unsqueeze(1), valid, self.length - 1)
        return last_logits(self.model, tokens.unsqueeze(1), valid, self.length - 1, self.cache)

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)


class _CopySource:
    """What a copy model's decoding keeps of its prompts: the copy keys of their source tokens, their ids and
    which columns are source. Beams never move between prompts, so ``expand`` is the only reordering needed."""

    def __init__(self, model: Transformer, prompts: list[list[int]], starts: list[int], ids: torch.Tensor,
                 valid: torch.Tensor, cache: DecodeCache) -> None:
        self.model, self.cache = model, cache
        head = model.copy_head
        hidden = padded_hidden(model, ids, valid, 0, cache)
        L = ids.shape[1]
        self.mask = torch.zeros_like(valid)
        for r, (p, s) in enumerate(zip(prompts, starts)):
            self.mask[r, L - len(p) + s:L - 1] = True  # left-padded: the prompt ends at column L - 1 (<|sep|>)
        self.keys, self.ids = head.keys(hidden), ids
        self.prefill_logits = self._mixture(hidden[:, -1])

    def _mixture(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = decode_pack.logits(self.model, hidden, self.cache).float()
        return self.model.copy_head.log_mixture(hidden, logits, self.keys, self.ids, self.mask)

    def expand(self, index: torch.Tensor) -> None:
        self.keys, self.ids, self.mask = (t.index_select(0, index) for t in (self.keys, self.ids, self.mask))

    def step(self, tokens: torch.Tensor, valid: torch.Tensor, start: int) -> torch.Tensor:
        return self._mixture(padded_hidden(self.model, tokens, valid, start, self.cache)[:, -1])


def search(logits: torch.Tensor, cfg: BeamConfig, *, eos_id: int, pad_id: int, limits: list[int],
           step: Callable[[torch.Tensor, list[bool]], torch.Tensor],
           reorder: Callable[[torch.Tensor], None]) -> list[_Hypotheses]:
    """The beam loop over ``len(limits)`` inputs with ``cfg.num_beams`` rows each (row b * K + k = beam k of
    input b), starting from their first next-token ``logits`` (B * K, V).

    ``step(tokens, live)`` feeds one token per row (the pad token to the rows of finished inputs, ``live``
    False) and returns the next logits; ``reorder(index)`` makes row i continue old row ``index[i]``."""
    B, K, V = len(limits), cfg.num_beams, logits.shape[-1]
    early_stopping = True if K == 1 else cfg.early_stopping  # one beam = greedy: stop at the first eos
    device = logits.device
    score_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64

    # Only beam 0 of each input is live at first, so the first step picks K different tokens.
    beam_scores = [0.0 if k == 0 else _NEG_INF for _ in range(B) for k in range(K)]
    beams: list[list[int]] = [[] for _ in range(B * K)]  # generated tokens of each beam
    hyps = [_Hypotheses(K, cfg.length_penalty, early_stopping) for _ in range(B)]
    done = [False] * B
    n = cfg.no_repeat_ngram_size

    for t in range(max(limits)):  # t = tokens generated so far by the running beams
        logprobs = logits.to(score_dtype).log_softmax(dim=-1)
        if t < cfg.min_new_tokens:
            logprobs[:, eos_id] = _NEG_INF
        if n > 0:
            rows, cols = [], []
            for i, seq in enumerate(beams):
                if not done[i // K] and beam_scores[i] > _NEG_INF:
                    banned = banned_ngram_tokens(seq, n)
                    rows += [i] * len(banned)
                    cols += banned
            if rows:
                logprobs[rows, cols] = _NEG_INF
        scores = (torch.tensor(beam_scores, dtype=score_dtype, device=device).unsqueeze(1) + logprobs).view(B, K * V)
        # A stable sort breaks exact ties by the lower (beam, token): with one beam that is argmax's choice.
        top_scores, top_index = scores.sort(dim=1, descending=True, stable=True)
        top_scores, top_index = top_scores[:, :2 * K].tolist(), top_index[:, :2 * K].tolist()

        next_scores, sources, tokens = [], [], []
        for b in range(B):
            running = [] if done[b] else _select(b, top_scores[b], top_index[b], K, V, eos_id, beams, hyps[b], t)
            if not done[b]:
                done[b] = _row_done(b, running, hyps[b], beams, beam_scores, K, t, limits[b])
            if done[b]:  # keep the rows as they are; they are fed padding from now on
                next_scores += beam_scores[b * K:(b + 1) * K]
                sources += range(b * K, (b + 1) * K)
                tokens += [pad_id] * K
                continue
            running += [(_NEG_INF, b * K, pad_id)] * (K - len(running))  # placeholders (fewer than K possible)
            for s, src, tok in running:
                next_scores.append(s)
                sources.append(src)
                tokens.append(tok)
        if all(done):
            break
        beams = [beams[src] + [tok] if not done[i // K] else beams[src]
                 for i, (src, tok) in enumerate(zip(sources, tokens))]
        beam_scores = next_scores
        if sources != list(range(B * K)):
            reorder(torch.tensor(sources, device=device))
        logits = step(torch.tensor(tokens, dtype=torch.long, device=device), [not done[i // K] for i in range(B * K)])
    return hyps


def _select(b: int, scores: list[float], index: list[int], K: int, V: int, eos_id: int,
            beams: list[list[int]], hyps: _Hypotheses, t: int) -> list[tuple[float, int, int]]:
    """Turn prompt b's best candidates into finished hypotheses (eos) and the next beams (score, src, token)."""
    running: list[tuple[float, int, int]] = []
    for rank, (s, flat) in enumerate(zip(scores, index)):
        if s == _NEG_INF:
            break
        k, tok = divmod(flat, V)
        src = b * K + k
        if tok == eos_id:
            if rank < K:  # Hugging Face: an eos only counts among the best num_beams candidates
                hyps.add(beams[src], s, length=t + 1, finished=True)
            continue
        running.append((s, src, tok))
        if len(running) == K:
            break
    return running


def _row_done(b: int, running: list[tuple[float, int, int]], hyps: _Hypotheses, beams: list[list[int]],
              beam_scores: list[float], K: int, t: int, limit: int) -> bool:
    """Is prompt b finished after this step? Adds its running beams as hypotheses when it hits its limit."""
    if not running:  # every continuation is forbidden (tiny vocabulary + n-gram ban + min_new_tokens)
        if not hyps.items:  # keep what the beams had, so the prompt still gets an answer
            for i in range(b * K, (b + 1) * K):
                if beam_scores[i] > _NEG_INF:
                    hyps.add(beams[i], beam_scores[i], length=t, finished=False)
        return True
    if hyps.is_done(running[0][0], t + 1, limit):
        return True
    if t + 1 >= limit:
        for s, src, tok in running:
            hyps.add(beams[src] + [tok], s, length=t + 1, finished=False)
        return True
    return False
