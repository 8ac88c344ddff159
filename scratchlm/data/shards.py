"""Memory-mapped token shards: the on-disk format between ``prepare`` (tokenize once) and training.

A shard with prefix ``P`` is three files:

* ``P.bin``     - all token ids back to back, little-endian ``uint16`` (vocab <= 65536) or ``uint32``;
* ``P.idx.npy`` - int64 start offset of each document in ``P.bin`` (for packing / document masking);
* ``P.json``    - ``ShardHeader``: counts, dtype, and the fingerprint of the tokenizer that wrote it.

The header is written last (and removed first when overwriting), so a ``P.json`` exists only for a complete
shard. Documents are separated by EOS (``eos=True``), so a model trained on packed windows sees boundaries.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from tqdm.auto import tqdm

FORMAT = "scratchlm-shard-v1"
_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


class ShardTokenizer(Protocol):
    """What ``write_shard`` needs from a tokenizer (``scratchlm.tokenizer.Tokenizer`` has it)."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def fingerprint(self) -> str: ...
    def encode_batch(self, texts: Sequence[str], *, bos: bool = ..., eos: bool = ...) -> list[list[int]]: ...


@dataclass(frozen=True)
class ShardHeader:
    """Contents of ``<prefix>.json``."""

    format: str
    dtype: str
    num_tokens: int
    num_documents: int
    num_bytes: int  # UTF-8 bytes of the encoded source text: bits-per-byte = total loss bits / num_bytes
    tokenizer_fingerprint: str
    vocab_size: int
    eos_id: int | None
    bos_id: int | None

    @property
    def np_dtype(self) -> np.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> ShardHeader:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"shard header {source} lacks {missing}; re-run prepare to rewrite the shard")
        header = cls(**{n: d[n] for n in names})  # unknown keys ignored: newer writers may add fields
        if header.dtype not in _DTYPES:
            raise ValueError(f"shard header {source}: dtype {header.dtype!r} is not one of {sorted(_DTYPES)}")
        return header


def dtype_for_vocab(vocab_size: int) -> str:
    """Smallest storage dtype that holds every id in ``range(vocab_size)``."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def _paths(prefix: str | Path) -> tuple[Path, Path, Path]:
    p = _strip_suffix(Path(prefix))
    return Path(f"{p}.bin"), Path(f"{p}.idx.npy"), Path(f"{p}.json")


def _strip_suffix(path: Path) -> Path:
    # Accept the prefix itself or any one of its three files.
    for suffix in (".idx.npy", ".bin", ".json"):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _fsync_close(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())  # data on disk before the rename makes it visible
    f.close()


def _chunks(texts: Iterable[str], size: int) -> Iterable[list[str]]:
    it = iter(texts)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def write_shard(
    texts: Iterable[str] | Sequence[str],
    tokenizer: ShardTokenizer,
    prefix: str | Path,
    *,
    bos: bool = False,
    eos: bool = True,
    chunk_size: int = 1024,
    progress: bool = True,
    desc: str | None = None,
) -> ShardHeader:
    """Tokenize ``texts`` (one document each) into the shard ``prefix``; returns its header.

    Streams: only ``chunk_size`` documents' tokens are in memory at a time. Written atomically: on any
    error no ``<prefix>.json`` exists, so a half-written shard is never opened as complete.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "write_shard expects an iterable of documents, not a single string; wrap it in a list"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if eos and tokenizer.eos_id is None:
        raise ValueError("write_shard(eos=True) needs a tokenizer with an eos_id")
    if bos and tokenizer.bos_id is None:
        raise ValueError("write_shard(bos=True) needs a tokenizer with a bos_id")
    bin_path, idx_path, json_path = _paths(prefix)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    dtype_name = dtype_for_vocab(tokenizer.vocab_size)
    dtype = _DTYPES[dtype_name]
    json_path.unlink(missing_ok=True)  # invalidate any old shard here before touching its data files

    tmp_bin, tmp_idx, tmp_json = _tmp(bin_path), _tmp(idx_path), _tmp(json_path)
    num_tokens = num_bytes = 0
    offsets: list[np.ndarray] = []
    total = len(texts) if isinstance(texts, Sequence) else None
    bar = tqdm(total=total, desc=desc or f"tokenize {bin_path.name}", unit="doc", disable=not progress)
    try:
        with open(tmp_bin, "wb") as f:
            for chunk in _chunks(texts, chunk_size):
                for t in chunk:
                    if not isinstance(t, str):
                        raise TypeError(
                            f"write_shard({bin_path}): documents must be str, got {type(t).__name__}"
                        )
                encoded = tokenizer.encode_batch(chunk, bos=bos, eos=eos)
                lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
                flat = np.fromiter(
                    itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum())
                )
                if flat.size and (flat.min() < 0 or flat.max() >= tokenizer.vocab_size):
                    raise ValueError(
                        f"write_shard({bin_path}): token ids span [{int(flat.min())}, {int(flat.max())}], "
                        f"outside [0, {tokenizer.vocab_size}); the tokenizer's vocab_size is wrong"
                    )
                offsets.append(num_tokens + np.concatenate(([0], np.cumsum(lengths)[:-1])))
                flat.astype(dtype).tofile(f)  # tofile: no second copy via .tobytes()
                num_tokens += int(flat.size)
                num_bytes += sum(len(t.encode("utf-8")) for t in chunk)
                bar.update(len(chunk))
                bar.set_postfix(tokens=num_tokens, refresh=False)
            _fsync_close(f)
        doc_offsets = np.concatenate(offsets).astype(np.int64) if offsets else np.zeros(0, np.int64)
        if doc_offsets.size == 0 or num_tokens == 0:
            raise ValueError(
                f"write_shard({bin_path}): no tokens to write (got {doc_offsets.size} documents); "
                "check the input data path/split/column"
            )
        with open(tmp_idx, "wb") as f:
            np.save(f, doc_offsets)  # file handle: np.save(path) would append another ".npy"
            _fsync_close(f)
        header = ShardHeader(
            format=FORMAT,
            dtype=dtype_name,
            num_tokens=num_tokens,
            num_documents=int(doc_offsets.size),
            num_bytes=num_bytes,
            tokenizer_fingerprint=tokenizer.fingerprint,
            vocab_size=tokenizer.vocab_size,
            eos_id=tokenizer.eos_id,
            bos_id=tokenizer.bos_id,
        )
        with open(tmp_json, "w", encoding="utf-8") as fj:
            json.dump(header.to_dict(), fj, indent=2)
            fj.write("\n")
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_idx, idx_path)
        os.replace(tmp_json, json_path)  # last: the header's existence marks the shard complete
    finally:
        bar.close()
        for p in (tmp_bin, tmp_idx, tmp_json):
            p.unlink(missing_ok=True)
    return header


class TokenShard:
    """A read-only, memory-mapped shard; ``shard.tokens[i:j]`` reads only those tokens from disk."""

    def __init__(
        self, prefix: Path, header: ShardHeader, tokens: np.ndarray, doc_offsets: np.ndarray
    ) -> None:
        self.prefix = prefix
        self.header = header
        self.tokens = tokens
        self.doc_offsets = doc_offsets

    @classmethod
    def open(cls, prefix: str | Path) -> TokenShard:
        """Open and validate the shard at ``prefix`` (or at one of its ``.bin`` / ``.json`` files)."""
        bin_path, idx_path, json_path = _paths(prefix)
        if not json_path.is_file():
            raise FileNotFoundError(
                f"no shard header {json_path} (missing, or its write did not finish); "
                "run prepare / write_shard to create the shard"
            )
        try:
            raw = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"shard header {json_path} is not valid JSON ({e}); re-run prepare") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"{json_path}: format is {got!r}, expected {FORMAT!r}; re-run prepare")
        header = ShardHeader.from_dict(raw, source=str(json_path))
        dtype = header.np_dtype

        if not bin_path.is_file():
            raise FileNotFoundError(
                f"shard data {bin_path} is missing (header {json_path} exists); re-run prepare"
            )
        expected, actual = header.num_tokens * dtype.itemsize, bin_path.stat().st_size
        if actual != expected:
            raise ValueError(
                f"shard data {bin_path} has {actual} bytes but its header says {header.num_tokens} tokens x "
                f"{dtype.itemsize} bytes = {expected} bytes (truncated or overwritten?); re-run prepare"
            )
        if header.num_tokens == 0:
            tokens: np.ndarray = np.zeros(0, dtype)  # np.memmap cannot map an empty file
        else:
            tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(header.num_tokens,))

        if not idx_path.is_file():
            raise FileNotFoundError(
                f"shard index {idx_path} is missing (header {json_path} exists); re-run prepare"
            )
        doc_offsets = np.load(idx_path, allow_pickle=False)
        if doc_offsets.shape != (header.num_documents,) or (
            doc_offsets.size and (doc_offsets[0] != 0 or doc_offsets[-1] > header.num_tokens)
        ):
            raise ValueError(
                f"shard index {idx_path} has shape {doc_offsets.shape}, expected ({header.num_documents},) "
                f"offsets in [0, {header.num_tokens}]; re-run prepare"
            )
        return cls(_strip_suffix(Path(prefix)), header, tokens, doc_offsets.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return self.header.num_tokens

    @property
    def num_documents(self) -> int:
        return self.header.num_documents

    def document(self, i: int) -> np.ndarray:
        """Tokens of document ``i`` (including its BOS/EOS if the shard was written with them)."""
        n = self.num_documents
        if not -n <= i < n:
            raise IndexError(f"document {i} out of range for shard {self.prefix} with {n} documents")
        i %= n
        end = int(self.doc_offsets[i + 1]) if i + 1 < n else self.header.num_tokens
        return self.tokens[int(self.doc_offsets[i]) : end]

    def check_tokenizer(self, tokenizer: ShardTokenizer) -> None:
        """Raise if ``tokenizer`` is not the one this shard was written with."""
        ours, theirs = self.header.tokenizer_fingerprint, tokenizer.fingerprint
        if ours != theirs:
            raise ValueError(
                f"shard {self.prefix} was written with tokenizer {ours[:12]} but the given tokenizer is "
                f"{theirs[:12]}; re-run prepare"
            )

    @property
    def bytes_per_token(self) -> float:
        """Source UTF-8 bytes per stored token (BOS/EOS included): converts loss per token to per byte."""
        return self.header.num_bytes / self.header.num_tokens if self.header.num_tokens else 0.0

    def __repr__(self) -> str:
        h = self.header
        return (
            f"TokenShard({str(self.prefix)!r}, tokens={h.num_tokens}, documents={h.num_documents}, "
            f"dtype={h.dtype})"
        )
