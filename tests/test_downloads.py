"""Downloads are pinned and verified: every URL names a commit and has a sha256 that is checked (a mismatch
deletes the file and says which hashes differ); the hub fallback reads a pinned revision. No network: the
fetch is replaced."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from scratchlm.data import sources
from scratchlm.data.registry import DATASETS, DatasetSpec
from scratchlm.data.sources import DatasetNotFoundError, DownloadIntegrityError, fetch_url, load_texts

# hub ids whose commit is not known yet: their hub fallback is off (registry docstring)
HUB_UNPINNED = {"sms_spam", "chnsenticorp", "aeslc"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCRATCHLM_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("SCRATCHLM_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def no_network(url: str):
        raise AssertionError(f"test tried the network: {url}")

    monkeypatch.setattr(sources, "_urlopen", no_network)


def _serve(monkeypatch: pytest.MonkeyPatch, body: bytes, *, fail_after: int | None = None) -> list[str]:
    """Replace the fetch with one answering ``body`` (optionally dying after ``fail_after`` bytes)."""
    requested: list[str] = []

    class Response(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            if fail_after is not None and self.tell() >= fail_after:
                raise ConnectionResetError("connection reset by peer")
            return super().read(n if fail_after is None else min(n, fail_after))

    def urlopen(url: str):
        requested.append(url)
        return Response(body)

    monkeypatch.setattr(sources, "_urlopen", urlopen)
    return requested


def _left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------------------------- the registry


def test_every_download_url_is_pinned_to_a_commit_and_has_a_sha256() -> None:
    urls = [(spec, f, url) for spec in DATASETS.values() for f, url in spec.urls.items()]
    assert {spec.name for spec, _, _ in urls} == {"tinyshakespeare", "wikitext2"}
    for spec, file_name, url in urls:
        assert re.search(r"/[0-9a-f]{40}/", url), f"{spec.name}: {url} is not pinned to a commit"
        assert not re.search(r"/(master|main|HEAD)/", url)
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256[file_name])


def test_every_hub_id_is_pinned_or_listed_as_unknown() -> None:
    for spec in DATASETS.values():
        if spec.hf_id is None:
            continue
        if spec.name in HUB_UNPINNED:
            assert spec.hf_revision is None
        else:
            assert spec.hf_revision is not None and re.fullmatch(r"[0-9a-f]{40}", spec.hf_revision), spec.name


def test_registry_hashes_match_the_shared_data_copies() -> None:
    root = os.environ.get("SCRATCHLM_DATA_DIR")
    checked = 0
    for spec in DATASETS.values():
        for file_name, digest in spec.sha256.items():
            path = Path(root or "/nonexistent") / spec.folder / file_name
            if path.is_file():
                assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
                checked += 1
    if not checked:
        pytest.skip("SCRATCHLM_DATA_DIR does not hold the downloadable files")


def test_a_spec_without_a_hash_or_with_a_branch_revision_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs a sha256"):
        DatasetSpec(name="x", description="", splits={"train": "a.txt"}, text_column="text",
                    urls={"a.txt": "https://example.org/0123456789abcdef0123456789abcdef01234567/a.txt"})
    with pytest.raises(ValueError, match="40-character commit"):
        DatasetSpec(name="x", description="", splits={"train": "a.parquet"}, text_column="text",
                    hf_id="someone/x", hf_revision="main")


# ----------------------------------------------------------------------------------------------- fetch_url


def test_fetch_checks_the_sha256_and_renames_into_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    body = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    _serve(monkeypatch, body)
    dest = tmp_path / "dl" / "input.txt"
    fetch_url("https://example.org/input.txt", dest, hashlib.sha256(body).hexdigest())
    assert dest.read_bytes() == body
    assert _left_in(dest.parent) == ["input.txt"]  # no temp file left


def test_a_mismatch_deletes_the_download_and_names_the_url_and_both_hashes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    body = b"tampered"
    _serve(monkeypatch, body)
    dest = tmp_path / "dl" / "input.txt"
    expected = "a" * 64
    with pytest.raises(DownloadIntegrityError) as e:
        fetch_url("https://example.org/input.txt", dest, expected)
    message = str(e.value)
    assert "https://example.org/input.txt" in message
    assert expected in message and hashlib.sha256(body).hexdigest() in message
    assert _left_in(dest.parent) == []  # neither the file nor a partial one


def test_an_interrupted_download_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _serve(monkeypatch, b"x" * 5000, fail_after=1000)
    dest = tmp_path / "dl" / "input.txt"
    with pytest.raises(ConnectionResetError):
        fetch_url("https://example.org/input.txt", dest, "b" * 64)
    assert _left_in(dest.parent) == []


# ----------------------------------------------------------------------------------------------- fallbacks


def test_dataset_fallback_downloads_the_pinned_url_and_verifies_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = "".join(f"line {i}\n" for i in range(50))
    spec = DATASETS["tinyshakespeare"]
    monkeypatch.setitem(DATASETS, "tinyshakespeare", dataclasses.replace(
        spec, sha256={"input.txt": hashlib.sha256(text.encode()).hexdigest()}))
    requested = _serve(monkeypatch, text.encode())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_texts("tinyshakespeare", "train", data_dir=empty) == [text[: int(len(text) * 0.9)]]
    assert requested == [spec.urls["input.txt"]] and "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e" in requested[0]


def test_dataset_fallback_with_a_wrong_file_fails_cleanly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _serve(monkeypatch, b"not shakespeare")
    monkeypatch.setitem(DATASETS, "tinyshakespeare", dataclasses.replace(DATASETS["tinyshakespeare"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        load_texts("tinyshakespeare", "train", data_dir=empty)
    message = str(e.value)
    assert "DownloadIntegrityError" in message and DATASETS["tinyshakespeare"].sha256["input.txt"] in message
    assert hashlib.sha256(b"not shakespeare").hexdigest() in message
    assert _left_in(tmp_path / "cache" / "tinyshakespeare") == []


def _fake_datasets(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []

    class FakeDataset:
        def to_pandas(self) -> pd.DataFrame:
            return pd.DataFrame({"sms": ["hi", "win cash"], "label": [0, 1], "text": ["a", "b"]})

    def load_dataset(hf_id: str, config: str | None = None, *, split: str, revision: str | None = None):
        calls.append((hf_id, config, split, revision))
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_fallback_pins_the_revision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_datasets(monkeypatch)
    assert load_texts("imdb", "test", data_dir=tmp_path) == ["a", "b"]
    assert calls == [("stanfordnlp/imdb", None, "test", "e6281661ce1c48d982bc483cf8a173c1bbeb5d31")]


def test_hub_fallback_without_a_pinned_revision_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_datasets(monkeypatch)
    with pytest.raises(DatasetNotFoundError, match="no pinned hub revision for ucirvine/sms_spam"):
        load_texts("sms_spam", "train", data_dir=tmp_path)
    assert calls == []
