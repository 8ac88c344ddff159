"""Tokenizer: fixed special ids, lossless roundtrip, transformers interop, determinism, streaming decode."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from scratchlm.tokenizer import (
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    TRANSFORMERS_SPECIAL_TOKENS,
    IncrementalDecoder,
    Tokenizer,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = [
    Path(os.environ.get("SCRATCHLM_DATA", REPO / "shared" / "data")),
    Path("/work/shared/data"),
]
DATA = next((d for d in DATA_CANDIDATES if (d / "tinyshakespeare" / "input.txt").is_file()), None)
needs_data = pytest.mark.skipif(DATA is None, reason=f"datasets not found in {DATA_CANDIDATES}")

# Small inline corpus: tests that only need *a* tokenizer stay independent of the shared datasets.
INLINE = [
    "The quick brown fox jumps over the lazy dog. 1234567890 numbers!\n",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n",
    "中华人民共和国成立于1949年，首都北京。北京是中国的政治和文化中心。\n",
    "机器学习是人工智能的一个分支。我们今天学习语言模型。😀🎉\n",
] * 20


def _take(texts, n_bytes: int) -> list[str]:
    out, total = [], 0
    for t in texts:
        out.append(t)
        total += len(t.encode("utf-8"))
        if total >= n_bytes:
            break
    return out


@pytest.fixture(scope="module")
def small_tok() -> Tokenizer:
    return train_tokenizer(INLINE, 400)


@pytest.fixture(scope="module")
def corpora():
    if DATA is None:
        pytest.skip("datasets not available")
    import pandas as pd

    en = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    zh_train = pd.read_parquet(DATA / "wikipedia_zh" / "train.parquet", columns=["text"])["text"]
    zh_val = pd.read_parquet(DATA / "wikipedia_zh" / "validation.parquet", columns=["text"])["text"]
    cut = len(en) // 2  # train on the first ~100 KB of Shakespeare, evaluate on text from the second half
    train = _take(zh_train, 100_000) + [en[i : i + 1000] for i in range(0, 100_000, 1000)]
    return {"train": train, "zh_val": _take(zh_val, 50_000), "en_val": [en[cut : cut + 50_000]]}


@pytest.fixture(scope="module")
def data_tok(corpora) -> Tokenizer:
    return train_tokenizer(corpora["train"], 2000)


def test_special_tokens_have_fixed_ids(small_tok: Tokenizer) -> None:
    assert len(SPECIAL_TOKENS) == 16 and SPECIAL_TOKENS[:3] == ("<|pad|>", "<|bos|>", "<|eos|>")
    for i, tok in enumerate(SPECIAL_TOKENS):
        assert small_tok.token_id(tok) == i
    assert (small_tok.pad_id, small_tok.bos_id, small_tok.eos_id, small_tok.sep_id) == (0, 1, 2, 3)
    assert small_tok.vocab_size == 400


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_token_in_text_is_one_token(small_tok: Tokenizer, special: str) -> None:
    ids = small_tok.encode(f"hello{special}世界")
    assert ids.count(SPECIAL_TOKENS.index(special)) == 1
    assert small_tok.decode(ids, skip_special=False) == f"hello{special}世界"
    assert small_tok.decode(ids) == "hello世界"


def test_token_id_error_lists_specials(small_tok: Tokenizer) -> None:
    with pytest.raises(KeyError, match=r"<\|translate\|>"):
        small_tok.token_id("<|nope|>")


def _random_latin1(rng: random.Random, n: int) -> str:
    return bytes(rng.randrange(256) for _ in range(n)).decode("latin-1")


def _random_unicode(rng: random.Random, n: int) -> str:
    cps = [
        rng.choice(
            [rng.randrange(0x20, 0x7F), rng.randrange(0x4E00, 0x9FFF), rng.randrange(0x1F300, 0x1FAFF)]
        )
        for _ in range(n)
    ]
    return "".join(map(chr, cps))


ROUNDTRIP = [
    "Hello, world! It's 2024; we'll see.",
    "中华人民共和国成立于1949年，首都北京。",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇨🇳🇬🇧",
    "mixed: DNA分子 is 脱氧核糖核酸 (deoxyribonucleic acid), 3.14159 ≈ π",
    "  leading spaces\n\n\ttabs\r\nCRLF   trailing   \n\n\n",
    "",
    " ",
    "\x00\x01\x7f control \u200b zero-width \ufeff BOM",
    "龘齉爨 rare hanzi, ﬁ ligature, Ελληνικά, русский, العربية, 日本語のテキスト, 한국어",
    "<|bos partial special |> and <|unknown|>",
]


@pytest.mark.parametrize("text", ROUNDTRIP)
def test_roundtrip(small_tok: Tokenizer, text: str) -> None:
    ids = small_tok.encode(text)
    assert small_tok.decode(ids) == text
    assert b"".join(small_tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_roundtrip_random(small_tok: Tokenizer) -> None:
    rng = random.Random(0)
    for _ in range(50):
        for text in (_random_latin1(rng, rng.randrange(1, 200)), _random_unicode(rng, rng.randrange(1, 100))):
            assert small_tok.decode(small_tok.encode(text)) == text


def test_encode_bos_eos_and_batch(small_tok: Tokenizer) -> None:
    texts = ["hello world", "你好，世界", ""]
    single = [small_tok.encode(t, bos=True, eos=True) for t in texts]
    assert single[2] == [small_tok.bos_id, small_tok.eos_id]
    assert all(ids[0] == 1 and ids[-1] == 2 for ids in single)
    assert small_tok.encode_batch(texts, bos=True, eos=True) == single
    assert small_tok.encode_batch(texts) == [small_tok.encode(t) for t in texts]


def test_transformers_interop(small_tok: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    file = small_tok.save(tmp_path / "tok")
    assert file == tmp_path / "tok" / "tokenizer.json"
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["eos_token"] == "<|eos|>"
    text = "To be, or not to be: 中华人民共和国 😀 1234 <|sep|> done"
    ours = small_tok.encode(text)
    from_file = transformers.PreTrainedTokenizerFast(tokenizer_file=str(file), **TRANSFORMERS_SPECIAL_TOKENS)
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    for hf in (from_file, auto, small_tok.to_transformers()):
        assert hf.encode(text, add_special_tokens=False) == ours
        assert hf(text)["input_ids"] == ours  # no template adds BOS/EOS behind our back
        assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.sep_token_id) == (0, 1, 2, 3)
        assert hf.decode(ours, skip_special_tokens=True) == small_tok.decode(ours)
        assert hf.decode(ours) == small_tok.decode(ours, skip_special=False)


def test_save_load_fingerprint(small_tok: Tokenizer, tmp_path: Path) -> None:
    small_tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    assert loaded.fingerprint == small_tok.fingerprint
    assert len(small_tok.fingerprint) == 64
    assert Tokenizer.load(tmp_path / "tokenizer.json").encode("你好 hi") == small_tok.encode("你好 hi")
    other = small_tok.save(tmp_path / "named" / "my_tok.json")
    assert Tokenizer.load(other).fingerprint == small_tok.fingerprint
    assert [p.name for p in other.parent.iterdir()] == ["my_tok.json"]  # no configs for a custom name


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)  # a directory without tokenizer.json
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ValueError, match="bad.json"):
        Tokenizer.load(bad)
    # A valid HF tokenizer without our special tokens.
    import tokenizers

    foreign = tokenizers.Tokenizer(tokenizers.models.BPE())
    foreign.add_special_tokens(["<s>", "</s>"])
    foreign.save(str(tmp_path / "foreign.json"))
    with pytest.raises(ValueError, match=r"<\|pad\|>"):
        Tokenizer.load(tmp_path / "foreign.json")


def test_training_is_deterministic(small_tok: Tokenizer) -> None:
    again = train_tokenizer(INLINE, 400)
    assert again.fingerprint == small_tok.fingerprint
    assert train_tokenizer(INLINE, 420).fingerprint != small_tok.fingerprint


def test_training_errors() -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer([], 1000)
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer(["", ""], 1000)
    with pytest.raises(ValueError, match=str(MIN_VOCAB_SIZE)):
        train_tokenizer(INLINE, MIN_VOCAB_SIZE - 1)
    with pytest.raises(TypeError, match="str"):
        train_tokenizer([b"bytes"], 1000)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single string"):
        train_tokenizer("a whole corpus as one string", 1000)


def test_unseen_bytes_encode_without_unk(small_tok: Tokenizer) -> None:
    # Characters absent from training still encode (as bytes) thanks to the full initial alphabet.
    text = "ꙮ𓀀"
    ids = small_tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert small_tok.decode(ids) == text


@pytest.mark.parametrize("text", ["中华人民共和国成立于1949年，首都北京。龘齉爨😀🎉👩‍👩‍👧", *ROUNDTRIP])
def test_incremental_decoder(small_tok: Tokenizer, text: str) -> None:
    ids = small_tok.encode(f"<|bos|>{text}<|eos|>")
    dec = IncrementalDecoder(small_tok)
    pieces = [dec.step(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    if "\ufffd" not in text:
        assert all("\ufffd" not in p for p in pieces)


def test_incremental_decoder_holds_partial_chars(small_tok: Tokenizer) -> None:
    ids = small_tok.encode("龘")  # rare: not merged, so three single-byte tokens
    assert len(ids) == 3
    dec = IncrementalDecoder(small_tok)
    assert [dec.step(i) for i in ids] == ["", "", "龘"]
    dec.step(ids[0])
    assert dec.flush() == "\ufffd"  # a stream cut mid-character is reported, then the decoder resets
    assert dec.step(small_tok.encode("a")[0]) == "a"
    keep = IncrementalDecoder(small_tok, skip_special=False)
    assert keep.step(small_tok.eos_id) == "<|eos|>"


@needs_data
def test_bytes_per_token_on_held_out(data_tok: Tokenizer, corpora) -> None:
    zh = data_tok.bytes_per_token(corpora["zh_val"])
    en = data_tok.bytes_per_token(corpora["en_val"])
    assert zh > 1.5 and en > 1.5, (zh, en)
    with pytest.raises(ValueError):
        data_tok.bytes_per_token([""])


@needs_data
def test_incremental_decoder_on_wikipedia_zh(data_tok: Tokenizer, corpora) -> None:
    text = corpora["zh_val"][0]
    dec = IncrementalDecoder(data_tok)
    pieces = [dec.step(i) for i in data_tok.encode(text)]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
