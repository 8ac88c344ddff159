"""Load a dataset (registry name) or your own files into a pandas DataFrame, or straight into a list of texts.

A registry name is looked up as ``<data_dir>/<folder>/<file>``, then ``<cache_dir>/<folder>/<file>``, then
downloaded (official URL, else the Hugging Face hub) into the cache: the URL is pinned to a commit and the file
must match the registry's sha256 (a mismatch deletes it and raises :class:`DownloadIntegrityError`); the hub
is read at the registry's pinned ``hf_revision`` only. A path may be a ``.txt``, ``.jsonl``,
``.csv``, ``.parquet`` (or WikiText ``.tokens``) file, or a folder of them. Malformed input raises
:class:`DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scratchlm.data.registry import DATASETS, DatasetSpec

log = logging.getLogger(__name__)

TxtMode = Literal["document", "lines", "paragraphs"]
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet", ".tokens")
_COMMON_SPLITS = ("train", "validation", "valid", "dev", "test", "unsupervised")
_TRUTHY = ("1", "true", "yes", "on")
# a WikiText article heading; section headings are " = = Section = = " and do not match
_WIKITEXT_TITLE = re.compile(r"^ = ([^=].*) = $")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")


class DataError(ValueError):
    """Malformed or unusable input data; the message names the file and line/row and says what to fix."""


class DatasetNotFoundError(DataError):
    """A registered dataset that is neither on disk nor downloadable; the message lists every place tried."""


class DownloadIntegrityError(DataError):
    """A downloaded file whose sha256 is not the registry's: it was deleted; the message names both hashes."""


# ----------------------------------------------------------------------------------------------- locations


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The data folder: explicit ``data_dir`` (``--data-dir``), else ``$SCRATCHLM_DATA_DIR``, else None."""
    value = data_dir if data_dir not in (None, "") else os.environ.get("SCRATCHLM_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads go: ``$SCRATCHLM_CACHE_DIR``, else ``~/.cache/scratchlm/datasets``."""
    value = os.environ.get("SCRATCHLM_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "scratchlm" / "datasets"


def offline() -> bool:
    """True when ``SCRATCHLM_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true: never touch the network."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUTHY for v in ("SCRATCHLM_OFFLINE", "HF_HUB_OFFLINE")
    )


# ----------------------------------------------------------------------------------------------- public API


def load_table(
    source: str | os.PathLike[str],
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    txt_mode: TxtMode = "document",
) -> pd.DataFrame:
    """Rows of ``source`` (registry name or local file/folder) for ``split`` as a DataFrame.

    For local paths ``split`` only matters when the path is a folder holding ``<split>.<ext>`` files.
    ``txt_mode`` says how local ``.txt`` files become rows: whole file, one per line, or one per paragraph.
    """
    if txt_mode not in ("document", "lines", "paragraphs"):
        raise ValueError(f"txt_mode must be 'document', 'lines' or 'paragraphs', got {txt_mode!r}")
    if isinstance(source, str) and source in DATASETS:  # a registry name wins; use ./name for a local folder
        return _load_registered(DATASETS[source], split, data_dir=data_dir, download=download)
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, split, txt_mode)
    if path.is_file():
        return _read_file(path, txt_mode)
    close = difflib.get_close_matches(str(source), list(DATASETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(
        f"{str(source)!r} is neither a known dataset ({', '.join(sorted(DATASETS))}) "
        f"nor an existing file or folder.{hint}"
    )


def load_texts(
    source: str | os.PathLike[str],
    split: str = "train",
    column: str | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    dropna: bool = False,
    **kw: object,
) -> list[str]:
    """The strings in ``column`` (default: the spec's ``text_column``, or ``text`` for local files).

    Null cells raise DataError naming the row unless ``dropna=True`` drops them; other ``kw`` (``txt_mode``)
    go to :func:`load_table`.
    """
    df = load_table(source, split, data_dir=data_dir, download=download, **kw)  # type: ignore[arg-type]
    spec = DATASETS.get(source) if isinstance(source, str) else None
    column = column or (spec.text_column if spec else "text")
    if column not in df.columns:
        raise DataError(
            f"column {column!r} not found in {_describe(source, split)}; available columns: "
            f"{', '.join(map(str, df.columns))}. Pass column=<one of them>."
        )
    values = df[column].tolist()
    texts: list[str] = []
    for i, value in enumerate(values):
        if isinstance(value, str):
            texts.append(value)
        elif dropna and _is_null(value):
            continue
        else:
            hint = " (pass dropna=True to skip empty cells)" if _is_null(value) else ""
            raise DataError(
                f"{_describe(source, split)}, {_row_origin(df, i)}, column {column!r}: expected a string, "
                f"got {type(value).__name__} {value!r}{hint}"
            )
    return texts


# ----------------------------------------------------------------------------------------------- registry


def _load_registered(
    spec: DatasetSpec, split: str, *, data_dir: str | os.PathLike[str] | None, download: bool
) -> pd.DataFrame:
    try:
        file_name = spec.file_for(split)
    except ValueError as e:
        raise DataError(str(e)) from None
    path = _find_or_fetch(spec, split, file_name, data_dir=data_dir, download=download)
    df = _read_file(path, "document")
    if split in spec.derived_splits:  # a single-file corpus: cut the split out of its characters
        text = "".join(df["text"])
        start, end = spec.derived_splits[split]
        n = len(text)
        df = pd.DataFrame({"text": [text[int(n * start) : int(n * end)]]})  # same arithmetic as nanoGPT
    return df


def _find_or_fetch(
    spec: DatasetSpec, split: str, file_name: str, *, data_dir: str | os.PathLike[str] | None, download: bool
) -> Path:
    """First existing copy of the file: data dir, then cache, then a fresh download into the cache."""
    tried: list[str] = []
    root = resolve_data_dir(data_dir)
    if root is None:
        tried.append("data dir: not set (no --data-dir / data_dir argument and no SCRATCHLM_DATA_DIR)")
    else:
        candidate = root / spec.folder / file_name
        if candidate.is_file():
            return candidate
        missing = "" if root.is_dir() else " (the data dir itself does not exist)"
        tried.append(f"{candidate}: no such file{missing}")
    cached = cache_dir() / spec.folder / file_name
    if cached.is_file():
        return cached
    tried.append(f"{cached}: no such file (cache, set by SCRATCHLM_CACHE_DIR)")

    if not download:
        tried.append("download: disabled (download=False)")
    elif offline():
        tried.append("download: disabled (SCRATCHLM_OFFLINE or HF_HUB_OFFLINE is set)")
    else:
        fetchers: list[tuple[str, Callable[[], None]]] = []
        if file_name in spec.urls:
            url = spec.urls[file_name]
            fetchers.append((url, lambda: fetch_url(url, cached, spec.sha256[file_name])))
        if spec.hf_id:
            where = f"hf://{spec.hf_id}@{spec.hf_revision or '(no pinned revision)'}"
            fetchers.append((where, lambda: _download_hf(spec, split, cached)))
        if not fetchers:
            tried.append("download: this dataset has no download URL or Hugging Face id")
        for where, fetch in fetchers:
            try:
                log.info("downloading %s %s from %s to %s", spec.name, split, where, cached)
                fetch()
                return cached
            except Exception as e:  # any failure: try the next source, report them all at the end
                tried.append(f"download from {where}: failed ({type(e).__name__}: {e})")

    lines = "\n  - ".join(tried)
    online_hint = (
        ", or run online (without SCRATCHLM_OFFLINE/HF_HUB_OFFLINE) so it can be downloaded into the cache"
        if (file_name in spec.urls or spec.hf_id)
        else " (this dataset has no public download: the source is named in its entry in scratchlm/data/registry.py)"
    )
    raise DatasetNotFoundError(
        f"dataset {spec.name!r} split {split!r} ({spec.folder}/{file_name}) not found. "
        f"Looked in:\n  - {lines}\n"
        f"To fix: point SCRATCHLM_DATA_DIR (or --data-dir) at a folder containing {spec.folder}/{file_name}"
        f"{online_hint}."
    )


def _atomic_write(dest: Path, write: Callable[[Path], None]) -> None:
    """Write via a temp file in the same folder + rename, so a crash never leaves a half file in the cache."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _urlopen(url: str):
    """The network call of :func:`fetch_url` (tests replace it)."""
    return urllib.request.urlopen(url, timeout=60)


def fetch_url(url: str, dest: Path, sha256: str) -> None:
    """Download ``url`` to ``dest`` through a temp file in the same folder, check its sha256, then rename.

    A mismatch (or an empty or interrupted download) deletes the temp file, so nothing half-written or
    unverified ever sits in the cache; the :class:`DownloadIntegrityError` names the URL and both hashes."""
    expected = sha256.lower()

    def write(tmp: Path) -> None:
        digest = hashlib.sha256()
        with _urlopen(url) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if tmp.stat().st_size == 0:
            raise DataError(f"{url} returned an empty file")
        if digest.hexdigest() != expected:
            raise DownloadIntegrityError(
                f"{url}: downloaded file has sha256 {digest.hexdigest()}, expected {expected} (the registry's "
                f"pin); the download was deleted. The file at that address changed or the transfer was "
                f"corrupted: retry, or put a verified copy in the data dir"
            )

    _atomic_write(dest, write)


def _download_hf(spec: DatasetSpec, split: str, dest: Path) -> None:
    try:
        import datasets  # optional dependency: pip install 'scratchlm[hub]'
    except ImportError as e:
        raise RuntimeError(
            "the Hugging Face `datasets` package is not installed (pip install 'scratchlm[hub]')"
        ) from e
    if spec.hf_revision is None:
        raise DataError(
            f"no pinned hub revision for {spec.hf_id} (hf_revision in scratchlm/data/registry.py), so the hub "
            "fallback is off: the branch head can change under a run"
        )
    df = datasets.load_dataset(spec.hf_id, spec.hf_config, split=split, revision=spec.hf_revision).to_pandas()
    df = df.rename(columns=spec.hf_columns)
    if (
        dest.suffix == ".tokens"
    ):  # hub WikiText is one row per line (newline included): rebuild the original file
        _atomic_write(dest, lambda tmp: tmp.write_text("".join(df["text"]), encoding="utf-8"))
    else:
        _atomic_write(dest, lambda tmp: pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp))


# ----------------------------------------------------------------------------------------------- local files


def _read_folder(folder: Path, split: str, txt_mode: TxtMode) -> pd.DataFrame:
    top = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in SUPPORTED_SUFFIXES]
    split_files = [p for p in top if p.stem == split]
    if split_files:  # a folder laid out as train.jsonl / validation.jsonl: take the requested split
        files = split_files
    else:
        present = sorted({p.stem for p in top if p.stem in _COMMON_SPLITS})
        if present:
            raise DataError(
                f"{folder}: no file for split {split!r}; the folder has splits: {', '.join(present)}"
            )
        files = sorted(
            (
                p
                for p in folder.rglob("*")
                if p.is_file() and p.suffix in SUPPORTED_SUFFIXES and not _hidden(p, folder)
            ),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
    if not files:
        raise DataError(
            f"{folder}: no supported files inside (looked for {', '.join(SUPPORTED_SUFFIXES)}, recursively)"
        )
    frames = [_read_file(p, txt_mode) for p in files]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df.attrs["origin"] = _concat_origins(frames)
    return df


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_file(path: Path, txt_mode: TxtMode) -> pd.DataFrame:
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        ".txt": lambda p: _read_txt(p, txt_mode),
        ".tokens": _read_wikitext,
        ".jsonl": _read_jsonl,
        ".csv": _read_csv,
        ".parquet": _read_parquet,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    df = reader(path)
    if len(df) == 0:
        raise DataError(f"{path} is empty (no rows); remove it or fill it")
    df.attrs["origin"] = [(str(path), 0, len(df))]
    return df


def _read_text(path: Path) -> str:
    """File contents as str; invalid UTF-8 raises DataError with the byte offset and line."""
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {e.start} (line {line}): {e.reason} "
            f"{data[e.start : e.start + 4]!r}; re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_txt(path: Path, txt_mode: TxtMode) -> pd.DataFrame:
    text = _read_text(path)
    if txt_mode == "lines":
        rows = [line for line in text.splitlines() if line.strip()]  # blank lines are not documents
    elif txt_mode == "paragraphs":
        rows = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    else:
        rows = [text]
    return pd.DataFrame({"text": rows})


def _read_wikitext(path: Path) -> pd.DataFrame:
    """WikiText ``.tokens``: one row per article, cut at the `` = Title = `` lines, text kept as is."""
    titles: list[str] = []
    bodies: list[list[str]] = []
    for line in _read_text(path).splitlines(keepends=True):
        heading = _WIKITEXT_TITLE.match(line.rstrip("\n"))
        if heading:
            titles.append(heading.group(1))
            bodies.append([])
        elif not bodies:  # text before the first title: its own row unless blank
            if line.strip():
                titles.append("")
                bodies.append([])
            else:
                continue
        bodies[-1].append(line)
    return pd.DataFrame({"title": titles, "text": ["".join(b) for b in bodies]})


def _read_jsonl(path: Path) -> pd.DataFrame:
    records: list[dict] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_csv(path: Path) -> pd.DataFrame:
    text = _read_text(path)
    try:
        # only empty cells are missing: "NA"/"null" in text columns are real words
        return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, csv.Error) as e:
        line = _csv_error_line(text, str(e))
        where = f"{path}:{line}" if line else str(path)
        raise DataError(
            f"{where}: malformed CSV ({e}). Fields containing commas, quotes or newlines must be wrapped in "
            'double quotes, with inner quotes doubled ("").'
        ) from None


def _csv_error_line(text: str, message: str) -> int | None:
    """File line where the record pandas complains about starts (pandas counts records, not lines)."""
    if m := re.search(r"in line (\d+)", message):  # "Expected 2 fields in line 4": 1-based record
        record = int(m.group(1)) - 1
    elif m := re.search(
        r"at row (\d+)|starting at row (\d+)", message
    ):  # "EOF inside string starting at row 3"
        record = int(m.group(1) or m.group(2))
    else:
        return None
    reader = csv.reader(io.StringIO(text))
    line = 1
    try:
        for _ in range(record):
            next(reader)
            line = reader.line_num + 1
    except (StopIteration, csv.Error):
        pass
    return line


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{path}: not a readable Parquet file ({e}); re-export it or check it is not truncated"
        ) from None


# ----------------------------------------------------------------------------------------------- messages


def _concat_origins(frames: list[pd.DataFrame]) -> list[tuple[str, int, int]]:
    origins, offset = [], 0
    for frame in frames:
        for file, start, n in frame.attrs.get("origin", []):
            origins.append((file, offset + start, n))
        offset += len(frame)
    return origins


def _row_origin(df: pd.DataFrame, i: int) -> str:
    """``row i`` plus the file and row inside it when the table came from local files."""
    for file, start, n in df.attrs.get("origin", []):
        if start <= i < start + n:
            return (
                f"row {i} ({file}, row {i - start})" if len(df.attrs["origin"]) > 1 else f"row {i} ({file})"
            )
    return f"row {i}"


def _describe(source: str | os.PathLike[str], split: str) -> str:
    if isinstance(source, str) and source in DATASETS:
        return f"dataset {source!r} split {split!r}"
    return str(source)


def _is_null(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists/arrays: not a scalar null
        return False
