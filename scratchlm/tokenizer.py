"""Byte-level BPE tokenizer for English + Chinese, trained with Hugging Face ``tokenizers`` (Rust).

* Special tokens sit at fixed ids 0..15 (``SPECIAL_TOKENS``), so task prompts and checkpoints agree on them.
* Byte-level: every byte has a token, so any string encodes (no UNK) and ``decode(encode(x)) == x``.
* Pre-tokenization is a GPT-4-style regex with two changes: digits split into groups of 1-2 (as in
  nanochat) and runs of Han characters are their own pre-tokens (never glued to Latin letters), capped
  at ``HAN_RUN`` characters.
* ``Tokenizer.save(dir)`` writes files that ``transformers.AutoTokenizer.from_pretrained(dir)`` loads.
* ``Tokenizer.fingerprint`` identifies the exact vocabulary + merges (catches tokenizer/checkpoint mismatch).
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS, SEP, CLS = "<|pad|>", "<|bos|>", "<|eos|>", "<|sep|>", "<|cls|>"
NUM_RESERVED = 6
# Order is the id assignment (0..15); append only, never reorder, or old checkpoints break.
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD,
    BOS,
    EOS,
    SEP,
    CLS,
    "<|en|>",
    "<|zh|>",
    "<|translate|>",
    "<|summarize|>",
    "<|classify|>",
    *(f"<|reserved_{i}|>" for i in range(NUM_RESERVED)),
)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # every byte + every special token

# Longest run of Han characters in one pre-token. Chinese punctuation already splits text into clauses
# (wikipedia_zh validation: median Han run 5 chars, p99 28, max 62), so the cap only bounds pathological
# unpunctuated text (classical Chinese, lists) instead of making a whole document one pre-token. Smaller
# caps cut real runs at arbitrary points and cost Chinese compression for ~nothing in English (the
# bytes/token of each choice: docs/results.md, "Measurements behind the code").
HAN_RUN = 32

# nanochat's GPT-4-style pattern (digits in groups of 1-2) with Han split off from other letters: Han and
# Latin/kana/Hangul never share a pre-token, so e.g. "DNA分子" is "DNA" + "分子". Han runs take the same
# optional one-char prefix as words (" 中国", "，首都"), which compresses Chinese better.
_LETTER_NOT_HAN = r"[\p{L}&&[^\p{Han}]]"  # class intersection (Oniguruma syntax, as tokenizers uses)
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)"""
    rf"""|[^\r\n\p{{L}}\p{{N}}]?+\p{{Han}}{{1,{HAN_RUN}}}"""
    rf"""|[^\r\n\p{{L}}\p{{N}}]?+{_LETTER_NOT_HAN}+"""
    r"""|\p{N}{1,2}"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]"""
    r"""|\s+(?!\S)"""
    r"""|\s+"""
)

TOKENIZER_FILE = "tokenizer.json"
# Keyword arguments that give a transformers tokenizer our named special tokens. tokenizer.json alone cannot
# carry them, so ``PreTrainedTokenizerFast(tokenizer_file=f)`` needs ``**TRANSFORMERS_SPECIAL_TOKENS``;
# ``from_pretrained(dir)`` reads them from the tokenizer_config.json that ``Tokenizer.save`` writes.
TRANSFORMERS_SPECIAL_TOKENS: dict[str, str | list[str]] = {
    "pad_token": PAD,
    "bos_token": BOS,
    "eos_token": EOS,
    "sep_token": SEP,
    "cls_token": CLS,
    "additional_special_tokens": list(SPECIAL_TOKENS[5:]),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-char table used by the ByteLevel pre-tokenizer/decoder."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
            # use_regex=False: the Split above already did the splitting; this only maps bytes to chars.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_untrained() -> tokenizers.Tokenizer:
    """An empty BPE tokenizer with our pre-tokenizer and decoder (what ``train_tokenizer`` trains)."""
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = _pre_tokenizer()
    tk.decoder = decoders.ByteLevel()
    return tk


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train byte-level BPE on ``texts``; same texts + arguments -> same tokenizer (same fingerprint)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: need at least {MIN_VOCAB_SIZE} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens); use e.g. 8192 or more"
        )
    if isinstance(texts, str):
        raise TypeError(
            "train_tokenizer expects an iterable of texts, not a single string; wrap it in a list"
        )
    tk = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=list(SPECIAL_TOKENS),  # given first, so they get ids 0..15 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
    )
    seen = {"texts": 0}

    def checked() -> Iterator[str]:
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(
                    f"train_tokenizer expects str texts, got {type(t).__name__}; decode bytes first"
                )
            if t:
                seen["texts"] += 1
                yield t

    tk.train_from_iterator(checked(), trainer=trainer)
    if seen["texts"] == 0:
        raise ValueError(
            "train_tokenizer got an empty corpus (no non-empty texts); check the data path/column"
        )
    return Tokenizer(tk)


class Tokenizer:
    """Thin typed wrapper around ``tokenizers.Tokenizer`` with our special tokens at fixed ids."""

    def __init__(self, tk: tokenizers.Tokenizer, *, source: str = "<memory>") -> None:
        self._tk = tk
        self._source = source
        self._allow_special = True
        for i, tok in enumerate(SPECIAL_TOKENS):
            got = tk.token_to_id(tok)
            if got != i:
                raise ValueError(
                    f"{source}: special token {tok!r} has id {got}, expected {i}; this is not a scratchlm "
                    "tokenizer (or an older layout); retrain it with scratchlm.tokenizer.train_tokenizer"
                )

    # -- ids -------------------------------------------------------------------------------------------
    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying Hugging Face ``tokenizers.Tokenizer``."""
        return self._tk

    @property
    def vocab_size(self) -> int:
        """Number of ids (including special tokens): the model's embedding size."""
        return self._tk.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return SPECIAL_TOKENS.index(PAD)

    @property
    def bos_id(self) -> int:
        return SPECIAL_TOKENS.index(BOS)

    @property
    def eos_id(self) -> int:
        return SPECIAL_TOKENS.index(EOS)

    @property
    def sep_id(self) -> int:
        return SPECIAL_TOKENS.index(SEP)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(range(len(SPECIAL_TOKENS)))

    def token_id(self, token: str) -> int:
        """Id of an exact vocabulary entry, e.g. ``token_id("<|zh|>")``."""
        i = self._tk.token_to_id(token)
        if i is None:
            raise KeyError(
                f"token {token!r} is not in the vocabulary; special tokens are: {', '.join(SPECIAL_TOKENS)}"
            )
        return i

    # -- encode / decode -------------------------------------------------------------------------------
    def encode(self, text: str, *, bos: bool = False, eos: bool = False,
               allow_special: bool | None = None) -> list[int]:
        """Token ids of ``text``. With ``allow_special`` (the default, except on a ``plain_text()`` view),
        special-token strings in the text become their single special id; with ``allow_special=False`` they
        are ordinary text ("<|eos|>" -> "<|", "eos", "|>"), as user-supplied text must be: it may not inject
        control tokens. ``bos`` / ``eos`` add those ids either way."""
        ids = self._backend_for(allow_special).encode(text, add_special_tokens=False).ids
        return self._wrap(ids, bos, eos)

    def encode_batch(self, texts: Sequence[str], *, bos: bool = False, eos: bool = False,
                     allow_special: bool | None = None) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads); same result as ``[encode(t) for t in texts]``."""
        texts = list(texts)
        tk = self._backend_for(allow_special)
        # encode_batch_fast skips char offsets we never use (tokenizers >= 0.21).
        fast = getattr(tk, "encode_batch_fast", tk.encode_batch)
        return [self._wrap(e.ids, bos, eos) for e in fast(texts, add_special_tokens=False)]

    def plain_text(self) -> Tokenizer:
        """A view of this tokenizer (same vocabulary, ids, fingerprint) whose ``encode`` / ``encode_batch``
        default to ``allow_special=False``: for encoding user text (prompts, texts to classify/translate)."""
        view = copy.copy(self)
        view._allow_special = False
        return view

    @property
    def allows_special(self) -> bool:
        """Whether ``encode`` turns special-token strings into special ids by default."""
        return self._allow_special

    def _backend_for(self, allow_special: bool | None) -> tokenizers.Tokenizer:
        if self._allow_special if allow_special is None else allow_special:
            return self._tk
        return self._plain_tk

    @cached_property
    def _plain_tk(self) -> tokenizers.Tokenizer:
        # A copy with tokenizers' ``encode_special_tokens`` set: added (special) tokens are not split out of the
        # text, so their strings go through the pre-tokenizer and BPE like any other text. A copy, not a toggle
        # on the shared backend, so concurrent encodes never see each other's setting.
        tk = tokenizers.Tokenizer.from_str(self._tk.to_str())
        tk.encode_special_tokens = True
        return tk

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        if bos:
            ids = [self.bos_id, *ids]
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    @cached_property
    def _id_bytes(self) -> list[bytes]:
        byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        table = [b""] * self.vocab_size
        for tok, i in self._tk.get_vocab(with_added_tokens=True).items():
            if i < len(SPECIAL_TOKENS):
                table[i] = tok.encode("utf-8")  # special tokens are literal text, not byte-mapped
            else:
                table[i] = bytes(byte_of[c] for c in tok)
        return table

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token (may be a partial UTF-8 character)."""
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(f"token id {token_id} out of range [0, {self.vocab_size})")
        return self._id_bytes[token_id]

    def bytes_per_token(self, texts: Iterable[str]) -> float:
        """UTF-8 bytes per token on (held-out) ``texts``: the compression ratio, higher is better."""
        texts = list(texts)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        n_tokens = sum(len(ids) for ids in self.encode_batch(texts))
        if n_tokens == 0:
            raise ValueError("bytes_per_token needs at least one non-empty text")
        return n_bytes / n_tokens

    # -- identity / persistence ------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 hex of the canonical tokenizer JSON; equal fingerprints <=> identical tokenization."""
        return hashlib.sha256(self._tk.to_str().encode("utf-8")).hexdigest()

    def save(self, path_or_dir: str | Path) -> Path:
        """Write ``tokenizer.json`` + transformers configs into a directory; returns the tokenizer.json path.

        A path ending in ``.json`` is the tokenizer file itself; the transformers configs are written next
        to it only if it is named ``tokenizer.json`` (the only name ``from_pretrained(dir)`` looks for).
        """
        path = Path(path_or_dir)
        file = path if path.suffix == ".json" else path / TOKENIZER_FILE
        file.parent.mkdir(parents=True, exist_ok=True)
        self._tk.save(str(file), pretty=True)
        if file.name != TOKENIZER_FILE:
            return file
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **TRANSFORMERS_SPECIAL_TOKENS,
            # Our decode never "cleans up" spaces before punctuation; transformers must not either.
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
            "model_input_names": ["input_ids", "attention_mask"],
        }
        for name, content in (
            ("tokenizer_config.json", config),
            ("special_tokens_map.json", TRANSFORMERS_SPECIAL_TOKENS),
        ):
            (file.parent / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        return file

    def to_transformers(self):  # -> transformers.PreTrainedTokenizerFast (optional dependency)
        """The same tokenizer as a ``transformers`` fast tokenizer with bos/eos/pad/sep/cls set."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=self._tk, clean_up_tokenization_spaces=False, **TRANSFORMERS_SPECIAL_TOKENS
        )

    @classmethod
    def load(cls, path_or_dir: str | Path) -> Tokenizer:
        """Load from a directory containing ``tokenizer.json`` or from the file itself."""
        path = Path(path_or_dir)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"no tokenizer at {file}; train one first (scratchlm.tokenizer.train_tokenizer / the prepare "
                "step) or pass the directory that contains tokenizer.json"
            )
        try:
            tk = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # the Rust side raises a bare Exception on bad JSON / schema
            raise ValueError(
                f"{file} is not a Hugging Face tokenizer.json ({e}); re-run the tokenizer training"
            ) from e
        return cls(tk, source=str(file))

    def __repr__(self) -> str:
        fp = self.fingerprint[:12]
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={fp}, source={self._source!r})"


class IncrementalDecoder:
    """Streaming decode: ``step(id)`` returns only the text completed by that token.

    Bytes of a UTF-8 character split across tokens are held back until the character is complete, so a
    stream of Chinese never shows U+FFFD halfway through a character. ``flush()`` returns what is left.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = tokenizer.special_ids if skip_special else frozenset()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id in self._skip:
            return ""
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Emit pending bytes (as U+FFFD if they never formed a character) and reset for a new stream."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out
