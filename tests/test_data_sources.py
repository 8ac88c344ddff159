"""Dataset registry and loaders: local files, the shared data folder, cache and (loopback-only) downloads."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import sys
import threading
import types
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from scratchlm.data import registry, sources
from scratchlm.data.registry import DATASETS, get_spec
from scratchlm.data.sources import DataError, DatasetNotFoundError, load_table, load_texts

EXPECTED_NAMES = {
    "tinyshakespeare",
    "wikipedia_en",
    "wikipedia_zh",
    "wikitext2",
    "imdb",
    "sms_spam",
    "tatoeba_cmn_eng",
    "chnsenticorp",
    "aeslc",
    "csl_ts",
    "ag_news",
    "gutenberg_en",
    "openstax_ccby_en",
    "shu_books_zh",
    "lctt_zh",
    "lawrefbook_zh",
    "tidb_docs_zh",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: private cache, no network (tests that serve files on loopback opt back in)."""
    monkeypatch.setenv("SCRATCHLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCRATCHLM_OFFLINE", "1")


@pytest.fixture
def shared_data() -> Path:
    root = os.environ.get("SCRATCHLM_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("SCRATCHLM_DATA_DIR does not point at the shared data folder")
    return Path(root)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SCRATCHLM_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("no_proxy", "NO_PROXY"):  # loopback must never go through a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- registry


def test_registry_has_exactly_the_expected_datasets() -> None:
    assert set(DATASETS) == EXPECTED_NAMES
    assert get_spec("wikitext2").folder == "wikitext"
    assert get_spec("imdb").folder == "imdb"
    assert get_spec("aeslc").target_column == "subject_line"
    assert get_spec("csl_ts").target_column == "summary"
    assert (get_spec("tatoeba_cmn_eng").text_column, get_spec("tatoeba_cmn_eng").target_column) == (
        "en",
        "zh",
    )
    assert {n for n, s in DATASETS.items() if s.general_text} == {
        "tinyshakespeare",
        "wikipedia_en",
        "wikipedia_zh",
        "imdb",
        "gutenberg_en",
        "openstax_ccby_en",
        "shu_books_zh",
        "lctt_zh",
        "lawrefbook_zh",
        "tidb_docs_zh",
    }
    assert "test" not in get_spec("imdb").pretrain_splits  # evaluation text stays out of pretraining


def test_get_spec_unknown_lists_known_names() -> None:
    with pytest.raises(registry.UnknownDatasetError) as info:
        get_spec("imbd")
    message = str(info.value)
    assert "'imdb'" in message and "tinyshakespeare" in message and "ag_news" in message
    assert isinstance(info.value, KeyError)


def test_registry_matches_shared_data(shared_data: Path) -> None:
    for spec in DATASETS.values():
        for split, file_name in spec.splits.items():
            path = shared_data / spec.folder / file_name
            assert path.is_file(), f"{spec.name}/{split}: {path} missing"
            if path.suffix == ".parquet":
                columns = set(pq.read_schema(path).names)
                wanted = {spec.text_column, spec.label_column, spec.target_column} - {None}
                assert wanted <= columns, f"{spec.name}/{split}: {wanted - columns} not in {columns}"


def test_unknown_split_lists_available_splits() -> None:
    with pytest.raises(DataError, match="has no split 'train'; it has: test"):
        load_table("ag_news", "train")


# ----------------------------------------------------------------------------------------------- shared data


def test_tinyshakespeare_split_matches_nanogpt(shared_data: Path) -> None:
    data = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    n = len(data)
    train = load_texts("tinyshakespeare", "train")
    val = load_texts("tinyshakespeare", "validation")
    assert train == [data[: int(n * 0.9)]] and val == [data[int(n * 0.9) :]]
    assert (len(train[0]), len(val[0])) == (1003854, 111540)


def test_imdb_train_rows(shared_data: Path) -> None:
    df = load_table("imdb", "train", data_dir=shared_data)
    assert len(df) == 25_000 and set(df["label"]) == {0, 1}


def test_wikitext2_splits_into_articles(shared_data: Path) -> None:
    df = load_table("wikitext2", "test")
    assert len(df) > 40
    assert df["title"].iloc[0] == "Robert <unk>"
    assert all(t.startswith(" = ") for t in df["text"])
    raw = (shared_data / "wikitext" / "wiki.test.tokens").read_text(encoding="utf-8")
    assert raw.startswith(" \n") and "".join(df["text"]) == raw[2:]  # kept as is but the blank first line


def test_missing_offline_names_every_place_searched(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_table("imdb", "train", data_dir=empty)
    message = str(info.value)
    assert str(empty / "imdb" / "train.parquet") in message
    assert str(tmp_path / "cache" / "imdb" / "train.parquet") in message
    assert "SCRATCHLM_OFFLINE" in message and "SCRATCHLM_DATA_DIR" in message


def test_missing_without_data_dir_or_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRATCHLM_DATA_DIR", raising=False)
    monkeypatch.delenv("SCRATCHLM_OFFLINE")
    with pytest.raises(DatasetNotFoundError, match="download=False") as info:
        load_table("csl_ts", "test", download=False)
    assert "data dir: not set" in str(info.value)


# ----------------------------------------------------------------------------------------------- downloads


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_root(tmp_path: Path):
    """Serve tmp_path/www on 127.0.0.1 only; yields (folder, base_url, stop)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            server.shutdown()
            server.server_close()
            stopped = True

    yield root, f"http://127.0.0.1:{server.server_address[1]}", stop
    stop()


def _patch_spec(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> None:
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], **changes))


def test_download_via_url_is_cached(
    http_root, online: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root, base_url, stop = http_root
    text = "".join(f"line {i}\n" for i in range(100))
    _write(root / "input.txt", text)
    _patch_spec(monkeypatch, "tinyshakespeare", urls={"input.txt": f"{base_url}/input.txt"},
                sha256={"input.txt": hashlib.sha256(text.encode()).hexdigest()})
    empty = tmp_path / "empty"
    empty.mkdir()

    train = load_texts("tinyshakespeare", "train", data_dir=empty)
    n = len(text)
    assert train == [text[: int(n * 0.9)]]
    cached = tmp_path / "cache" / "tinyshakespeare" / "input.txt"
    assert cached.read_text(encoding="utf-8") == text
    assert [p.name for p in cached.parent.iterdir()] == ["input.txt"]  # no temp files left behind

    stop()  # the second call must not need the server
    assert load_texts("tinyshakespeare", "validation", data_dir=empty) == [text[int(n * 0.9) :]]


def test_failed_download_is_reported(online: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/input.txt"
    _patch_spec(monkeypatch, "tinyshakespeare", urls={"input.txt": url}, sha256={"input.txt": "0" * 64})
    with pytest.raises(DatasetNotFoundError, match="download from http://127.0.0.1"):
        load_table("tinyshakespeare", data_dir=tmp_path)
    assert not (tmp_path / "cache" / "tinyshakespeare" / "input.txt").exists()


def test_offline_env_blocks_download(http_root, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root, base_url, _ = http_root
    _write(root / "input.txt", "never fetched")
    _patch_spec(monkeypatch, "tinyshakespeare", urls={"input.txt": f"{base_url}/input.txt"},
                sha256={"input.txt": "0" * 64})
    monkeypatch.delenv("SCRATCHLM_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="HF_HUB_OFFLINE"):
        load_table("tinyshakespeare", data_dir=tmp_path)


def test_hub_fallback_maps_columns_and_caches_parquet(
    online: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = []

    class FakeDataset:
        def to_pandas(self) -> pd.DataFrame:
            return pd.DataFrame({"review": ["good", "bad"], "label": [1, 0]})

    def load_dataset(hf_id: str, config: str | None, split: str, revision: str | None = None) -> FakeDataset:
        calls.append((hf_id, config, split, revision))
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    _patch_spec(monkeypatch, "imdb", hf_columns={"review": "text"})
    assert load_texts("imdb", "test", data_dir=tmp_path) == ["good", "bad"]
    assert calls == [("stanfordnlp/imdb", None, "test", registry.DATASETS["imdb"].hf_revision)]
    assert len(calls[0][3]) == 40  # a pinned commit, not a branch
    assert (tmp_path / "cache" / "imdb" / "test.parquet").is_file()


# ----------------------------------------------------------------------------------------------- local files


def test_txt_modes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.txt", "one\ntwo\n\n\nthree\n  \nfour\n")
    assert load_texts(path) == ["one\ntwo\n\n\nthree\n  \nfour\n"]
    assert load_texts(path, txt_mode="lines") == ["one", "two", "three", "four"]
    assert load_texts(path, txt_mode="paragraphs") == ["one\ntwo", "three", "four"]


def test_folder_is_recursive_and_sorted(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "b.txt", "second")
    _write(tmp_path / "d" / "sub" / "c.jsonl", '{"text": "third"}\n')
    _write(tmp_path / "d" / "a.txt", "first")
    _write(tmp_path / "d" / "notes.md", "ignored")
    assert load_texts(tmp_path / "d") == ["first", "second", "third"]


def test_folder_with_split_files_picks_the_split(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "train.jsonl", '{"text": "t1"}\n{"text": "t2"}\n')
    _write(tmp_path / "d" / "validation.jsonl", '{"text": "v1"}\n')
    assert load_texts(tmp_path / "d") == ["t1", "t2"]
    assert load_texts(tmp_path / "d", "validation") == ["v1"]
    with pytest.raises(DataError, match="has splits: train, validation"):
        load_table(tmp_path / "d", "test")


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jsonl", '{"text": "ok"}\n\n{"text": "broken}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:3: invalid JSON"):
        load_table(path)


def test_csv_broken_quote_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", 'text,label\n"multi\nline",1\nok,0\n"broken,0\nlast,1\n')
    with pytest.raises(DataError, match=r"x\.csv:5: malformed CSV"):
        load_table(path)


def test_csv_bad_row_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", 'text,label\n"multi\nline",1\na,b,c\n')
    with pytest.raises(DataError, match=r"x\.csv:4: malformed CSV .*Expected 2 fields"):
        load_table(path)


def test_csv_keeps_na_words(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "text,label\nNA,1\nnull,0\n")
    assert load_texts(path) == ["NA", "null"]


def test_missing_column_lists_available(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jsonl", '{"body": "a", "label": 1}\n')
    with pytest.raises(DataError, match=r"column 'text' not found .*available columns: body, label"):
        load_texts(path)
    assert load_texts(path, column="body") == ["a"]


def test_null_cells(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jsonl", '{"text": "a"}\n{"text": null}\n{"text": "c"}\n')
    with pytest.raises(DataError, match=r"row 1 .*dropna=True"):
        load_texts(path)
    assert load_texts(path, dropna=True) == ["a", "c"]
    numbers = _write(tmp_path / "n.jsonl", '{"text": "a"}\n{"text": 5}\n')
    with pytest.raises(DataError, match=r"row 1 .*expected a string, got int"):
        load_texts(numbers, dropna=True)


def test_invalid_utf8_reports_byte_offset(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.txt", b"hello\nw\xffrld\n")
    with pytest.raises(DataError, match=r"bad\.txt: invalid UTF-8 at byte offset 7 \(line 2\)"):
        load_table(path)


@pytest.mark.parametrize("name,content", [("e.txt", ""), ("e.jsonl", "\n\n"), ("e.csv", "text,label\n")])
def test_empty_files(tmp_path: Path, name: str, content: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError, match="is empty"):
        load_table(path)


def test_parquet_and_unknown_source(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"text": ["a", "b"]}).to_parquet(path)
    assert load_texts(path) == ["a", "b"]
    with pytest.raises(DataError, match="neither a known dataset"):
        load_table(tmp_path / "nope.txt")


def test_locations_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCRATCHLM_DATA_DIR", str(tmp_path))
    assert sources.resolve_data_dir() == tmp_path
    assert sources.resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    assert sources.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SCRATCHLM_CACHE_DIR")
    assert sources.cache_dir() == Path.home() / ".cache" / "scratchlm" / "datasets"
