"""Token shards: exact readback, header counts, dtype choice, validation errors, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from scratchlm.data.shards import FORMAT, ShardHeader, TokenShard, write_shard
from scratchlm.tokenizer import Tokenizer, train_tokenizer

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "中华人民共和国成立于1949年，首都北京。",
    "",
    "emoji 😀 and\nnewlines\n\n",
    "To be, or not to be, that is the question.",
] * 7


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(DOCS * 4, 350)


class StubTokenizer:
    """Big-vocab fake: one token per character, ids in the top 1000 of the vocab (> 65535 for 70k)."""

    def __init__(self, vocab_size: int = 70_000, fingerprint: str = "f" * 64) -> None:
        self.vocab_size = vocab_size
        self.eos_id = vocab_size - 1
        self.bos_id = vocab_size - 2
        self.fingerprint = fingerprint

    def encode_batch(self, texts: Sequence[str], *, bos: bool = False, eos: bool = False) -> list[list[int]]:
        out = []
        for t in texts:
            ids = [self.vocab_size - 1000 + ord(c) % 900 for c in t]
            out.append(([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else []))
        return out


def test_write_and_read_back(tok: Tokenizer, tmp_path: Path) -> None:
    prefix = tmp_path / "sub" / "train"
    header = write_shard(DOCS, tok, prefix, chunk_size=4, progress=False)
    expected = [ids + [tok.eos_id] for ids in (tok.encode(d) for d in DOCS)]
    flat = [i for ids in expected for i in ids]

    shard = TokenShard.open(prefix)
    assert shard.header == header
    assert isinstance(shard.tokens, np.memmap) and shard.tokens.dtype == np.dtype("<u2")
    assert len(shard) == len(flat) and shard.tokens.tolist() == flat
    assert [shard.document(i).tolist() for i in range(len(DOCS))] == expected
    assert shard.document(-1).tolist() == expected[-1]
    assert shard.doc_offsets.dtype == np.int64 and shard.doc_offsets[0] == 0
    assert (np.diff(shard.doc_offsets) > 0).all()  # EOS makes even the empty documents non-empty
    with pytest.raises(IndexError):
        shard.document(len(DOCS))
    # Any of the shard's files works as the prefix.
    assert TokenShard.open(f"{prefix}.bin").header == header
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["train.bin", "train.idx.npy", "train.json"]


def test_header_counts(tok: Tokenizer, tmp_path: Path) -> None:
    header = write_shard(iter(DOCS), tok, tmp_path / "s", bos=True, progress=False)  # plain iterator
    raw = json.loads((tmp_path / "s.json").read_text())
    assert raw == header.to_dict() and raw["format"] == FORMAT
    assert header.num_documents == len(DOCS)
    assert header.num_bytes == sum(len(d.encode("utf-8")) for d in DOCS)
    assert header.num_tokens == sum(len(tok.encode(d)) + 2 for d in DOCS)
    assert (header.vocab_size, header.eos_id, header.bos_id) == (tok.vocab_size, 2, 1)
    assert header.tokenizer_fingerprint == tok.fingerprint
    shard = TokenShard.open(tmp_path / "s")
    assert shard.document(0)[0] == tok.bos_id and shard.document(0)[-1] == tok.eos_id
    assert shard.bytes_per_token == pytest.approx(header.num_bytes / header.num_tokens)


def test_dtype_switches_to_uint32(tmp_path: Path) -> None:
    stub = StubTokenizer()
    header = write_shard(["abc", "de"], stub, tmp_path / "big", progress=False)
    assert header.dtype == "uint32"
    shard = TokenShard.open(tmp_path / "big")
    assert shard.tokens.dtype == np.dtype("<u4")
    assert shard.document(1).tolist() == [69_000 + ord("d"), 69_000 + ord("e"), stub.eos_id]
    assert (tmp_path / "big.bin").stat().st_size == 4 * (4 + 3)  # "abc"+EOS, "de"+EOS
    edge = StubTokenizer(65_536)  # ids up to 65535 still fit uint16
    assert write_shard(["abc"], edge, tmp_path / "edge", progress=False).dtype == "uint16"
    assert TokenShard.open(tmp_path / "edge").tokens.tolist() == [*edge.encode_batch(["abc"])[0], 65_535]


def test_out_of_range_ids_rejected(tmp_path: Path) -> None:
    stub = StubTokenizer(70_000)
    stub.vocab_size = 60_000  # lies: ids up to 69_999 would wrap around in uint16
    with pytest.raises(ValueError, match="vocab_size"):
        write_shard(["abc"], stub, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad.json").exists()


def test_truncated_bin_is_reported(tok: Tokenizer, tmp_path: Path) -> None:
    header = write_shard(DOCS, tok, tmp_path / "t", progress=False)
    bin_path = tmp_path / "t.bin"
    with open(bin_path, "r+b") as f:
        f.truncate(bin_path.stat().st_size - 2)
    expected = header.num_tokens * 2
    with pytest.raises(ValueError, match=rf"t\.bin has {expected - 2} bytes.*= {expected} bytes"):
        TokenShard.open(tmp_path / "t")


def test_open_errors(tok: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        TokenShard.open(tmp_path / "nope")
    write_shard(DOCS, tok, tmp_path / "s", progress=False)
    raw = json.loads((tmp_path / "s.json").read_text())
    (tmp_path / "s.json").write_text(json.dumps({**raw, "format": "something-else"}))
    with pytest.raises(ValueError, match="scratchlm-shard-v1"):
        TokenShard.open(tmp_path / "s")
    del raw["num_bytes"]
    (tmp_path / "s.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="num_bytes"):
        TokenShard.open(tmp_path / "s")


def test_tokenizer_mismatch(tok: Tokenizer, tmp_path: Path) -> None:
    write_shard(DOCS, tok, tmp_path / "s", progress=False)
    shard = TokenShard.open(tmp_path / "s")
    shard.check_tokenizer(tok)  # same tokenizer: fine
    other = train_tokenizer(DOCS * 4, 360)
    msg = (
        rf"written with tokenizer {tok.fingerprint[:12]} but the given tokenizer is {other.fingerprint[:12]}"
    )
    with pytest.raises(ValueError, match=msg + ".*re-run prepare"):
        shard.check_tokenizer(other)


def test_empty_input(tok: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokens"):
        write_shard([], tok, tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="no tokens"):
        write_shard(["", ""], tok, tmp_path / "e", eos=False, progress=False)
    with pytest.raises(TypeError, match="single string"):
        write_shard("just one string", tok, tmp_path / "e", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_is_atomic(tok: Tokenizer, tmp_path: Path) -> None:
    prefix = tmp_path / "a"

    def docs_then_crash() -> Iterator[str]:
        yield from DOCS
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_shard(docs_then_crash(), tok, prefix, chunk_size=3, progress=False)
    assert list(tmp_path.iterdir()) == []  # no header, and the temporary files are cleaned up

    # Overwriting a good shard and failing leaves no header: the old data is never mixed with new.
    write_shard(DOCS, tok, prefix, progress=False)
    with pytest.raises(RuntimeError):
        write_shard(docs_then_crash(), tok, prefix, chunk_size=3, progress=False)
    assert not Path(f"{prefix}.json").exists()
    with pytest.raises(FileNotFoundError):
        TokenShard.open(prefix)


def test_header_roundtrip_ignores_unknown_keys() -> None:
    h = ShardHeader(FORMAT, "uint16", 10, 2, 30, "ab" * 32, 1000, 2, 1)
    assert ShardHeader.from_dict({**h.to_dict(), "future_field": 1}) == h
    assert h.np_dtype == np.dtype("<u2")
