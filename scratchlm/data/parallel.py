"""Paired text for sequence-to-sequence tasks (translation, summarization): load, check, split.

``load_parallel(cfg)`` returns train / validation / test :class:`ParallelSplit` s of (source, target,
references) triples:

* ``dataset`` is a registry name (``tatoeba_cmn_eng``, ``aeslc``, ``csl_ts``), a local ``.jsonl`` /
  ``.csv`` / ``.parquet`` file or a folder of split files (``train.jsonl``, ``test.jsonl``...) with
  source/target columns, or -- with ``dataset`` left empty -- two line-aligned ``.txt`` files
  ``src_file`` / ``tgt_file`` (one segment per line; lines are cut at ``\\n`` only, so a U+2028 inside a
  sentence does not shift the alignment).
* Columns: ``source_column`` / ``target_column``, by default the registry's. For a dataset whose columns
  are named after languages (tatoeba: ``en``, ``zh``) the direction ``src_lang`` -> ``tgt_lang`` picks
  them (``src_lang="zh", tgt_lang="en"`` translates Chinese into English). Local files default to
  ``source`` / ``target`` columns, else to columns named ``src_lang`` / ``tgt_lang``.
* Splits: ``val_split`` / ``test_split`` ``"auto"`` use the dataset's own ``validation`` / ``test`` split
  when it has one and carve otherwise; ``None`` always carves. A carved test set is ``test_size`` pairs
  chosen by a seeded shuffle of the training file; the validation set (``val_size``; 0 = none) is then
  chosen, seeded, from what is left. Tatoeba, which has one file, gets a fixed 2,000 / 1,000 split.
* References: every example has a list of references. AESLC's validation and test files hold three
  human-written subjects per e-mail (``subject_line_ann0..2``, the paper's evaluation references):
  they become ``references``. In the *test* split the first of them is also the ``target`` (and the
  original subject stays in ``extra["subject_line"]``); in the validation split ``target`` stays the
  original subject (the training distribution, for validation loss) and ``references`` are the three
  annotations (for ROUGE-based selection). Otherwise ``references == [target]``.
* Every other column stays available per example in ``split.extra`` (tatoeba's licence ``attribution``,
  AESLC's ``file``).

Cleaning, in this order, counted per split in ``ParallelData.dropped``:

1. leading/trailing whitespace is stripped from both sides; a pair with an empty (or null) source or
   target is **dropped with a counted warning** (aligned corpora routinely have blank lines, and one bad
   line should not stop a run); a cell that is neither a string nor null raises :class:`DataError`
   naming the file and row;
2. ``dedup``: repeated pairs (whitespace-normalised, case-folded: :func:`~scratchlm.data.labeled.text_key`)
   are dropped from train and validation, keeping the first; a test *file* is never changed;
3. the leakage guard: a train/validation pair sharing a side with a test pair is removed and counted in
   ``removed_overlap`` (``leakage_guard="auto"``: either side for translation, the source only for
   summarization, whose short targets such as "Meeting" legitimately recur);
4. ``max_source_chars`` / ``max_target_chars`` drop over-long train/validation pairs; the test set is
   never filtered, so scores stay comparable (cut long inputs at tokenization instead).

Bad input raises :class:`DataError`: unpaired ``.txt`` files (both line counts), invalid UTF-8 (file and
byte offset), missing columns (the available ones), no pairs left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import LeakageError
from .labeled import text_key
from .registry import DATASETS
from .sources import SUPPORTED_SUFFIXES, DataError, _describe, _is_null, _read_text, _row_origin, load_table

log = logging.getLogger(__name__)

SUPPORTED_LANGS = ("en", "zh")
GUARDS = ("auto", "both", "source")
# registry datasets: (source language, target language) and the columns holding several references
DEFAULT_LANGS: dict[str, tuple[str, str]] = {
    "tatoeba_cmn_eng": ("en", "zh"),
    "aeslc": ("en", "en"),
    "csl_ts": ("zh", "zh"),
}
DEFAULT_REFERENCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "aeslc": ("subject_line_ann0", "subject_line_ann1", "subject_line_ann2"),
}
_VAL_NAMES = ("validation", "valid", "dev")


@dataclass
class Seq2SeqDataConfig:
    dataset: str = ""  # registry name or local jsonl/csv/parquet file or folder; "" with src_file/tgt_file
    src_file: str | None = None  # two line-aligned .txt files (instead of ``dataset``)
    tgt_file: str | None = None
    source_column: str | None = None  # default: see the module docstring
    target_column: str | None = None
    reference_columns: list[str] | None = None  # None: the dataset's (AESLC: subject_line_ann0..2); []: none
    src_lang: str | None = None  # "en" / "zh"; None: the dataset's (tatoeba en->zh, aeslc en, csl_ts zh), else en
    tgt_lang: str | None = None
    train_split: str = "train"
    val_split: str | None = "auto"  # "auto": the dataset's validation split if any, else carve; None: carve
    test_split: str | None = "auto"  # "auto": the dataset's test split if any, else carve; None: carve
    val_size: int = 1000  # carved validation pairs (0: no validation set)
    test_size: int = 2000  # carved test pairs
    dedup: bool = True
    leakage_guard: str = "auto"  # "both": either side may not occur in test; "source": the source only
    max_source_chars: int | None = None  # drop longer train/validation pairs (never test pairs)
    max_target_chars: int | None = None
    # every reference of a training example becomes a pair of its own (and a validation example's first
    # reference its target): AESLC's validation e-mails carry three human-written subjects, the style its test
    # references share and its training subjects (the senders' own) do not. With ``train_split: validation``
    # and ``val_split: null`` the e-mails are split before they are expanded, so none is on both sides
    references_as_targets: bool = False
    max_train_examples: int | None = None  # seeded subsamples, for quick runs
    max_val_examples: int | None = None
    max_test_examples: int | None = None
    data_dir: str | None = None
    seed: int = 1337
    # personal data in sources, targets and references (e-mail addresses, phone numbers, ... in AESLC's e-mails)
    # becomes typed placeholders (<email>, <phone>, ...) as in pretraining and classification data; applied after
    # the split, so the split is the same either way. false: keep the text as it is
    redact_pii: bool = True

    def validate(self) -> None:
        if bool(self.src_file) != bool(self.tgt_file):
            raise ValueError("data.src_file and data.tgt_file go together: set both (two line-aligned .txt files)")
        if self.src_file and self.dataset:
            raise ValueError("set either data.dataset or data.src_file/data.tgt_file, not both")
        if not self.src_file and not self.dataset:
            raise ValueError("data.dataset is empty: name a dataset or file, or set data.src_file/data.tgt_file")
        if self.src_file and (self.val_split not in (None, "auto") or self.test_split not in (None, "auto")):
            raise ValueError("with data.src_file/tgt_file the validation and test sets are carved: "
                             "leave data.val_split and data.test_split at 'auto' or null")
        for name in ("src_lang", "tgt_lang"):
            value = getattr(self, name)
            if value is not None and value not in SUPPORTED_LANGS:
                raise ValueError(f"data.{name} must be one of {', '.join(SUPPORTED_LANGS)}, got {value!r}")
        if self.leakage_guard not in GUARDS:
            raise ValueError(f"data.leakage_guard must be one of {', '.join(GUARDS)}, got {self.leakage_guard!r}")
        if self.val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {self.val_size}")
        if self.test_size <= 0:
            raise ValueError(f"data.test_size must be > 0 (the carved test set), got {self.test_size}")
        for name in ("max_source_chars", "max_target_chars", "max_train_examples", "max_val_examples",
                     "max_test_examples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"data.{name} must be > 0 or null, got {value}")
        if self.val_split == self.train_split:
            raise ValueError(f"data.val_split '{self.val_split}' is also the training split (null: carve one)")
        if self.test_split not in (None, "auto") and self.test_split in (self.train_split, self.val_split):
            raise LeakageError(f"data.test_split '{self.test_split}' is also the training or validation split")


class Seq2SeqExample(NamedTuple):
    source: str
    target: str
    references: list[str]


@dataclass
class ParallelSplit:
    name: str  # "dataset:split" (with "[...]" for seeded carve-outs and subsamples)
    sources: list[str]
    targets: list[str]
    references: list[list[str]]  # per example; [target] unless the data has several references
    extra: dict[str, list] = field(default_factory=dict)  # other columns, per example (e.g. "attribution")

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Seq2SeqExample:
        return Seq2SeqExample(self.sources[i], self.targets[i], self.references[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def subset(self, idx, name: str | None = None) -> ParallelSplit:
        idx = [int(i) for i in idx]
        return ParallelSplit(name or self.name, [self.sources[i] for i in idx], [self.targets[i] for i in idx],
                             [self.references[i] for i in idx],
                             {k: [v[i] for i in idx] for k, v in self.extra.items()})


@dataclass
class ParallelData:
    train: ParallelSplit
    val: ParallelSplit  # empty with val_size 0
    test: ParallelSplit
    src_lang: str
    tgt_lang: str
    source_column: str
    target_column: str
    dropped: dict[str, dict[str, int]]  # split -> reason (empty, duplicate, source_too_long, ...) -> pairs
    removed_overlap: dict[str, int]  # split read -> pairs removed because they share a side with a test pair
    redactions: dict[str, int] = field(default_factory=dict)  # PII kind -> spans replaced (all splits)

    @property
    def is_translation(self) -> bool:
        return self.src_lang != self.tgt_lang

    def summary(self) -> str:
        parts = [f"{s.name}: {len(s):,}" for s in (self.train, self.val, self.test)]
        for split, reasons in self.dropped.items():
            counts = ", ".join(f"{k} {v:,}" for k, v in reasons.items() if v)
            if counts:
                parts.append(f"dropped from {split}: {counts}")
        removed = ", ".join(f"{k} {v:,}" for k, v in self.removed_overlap.items() if v)
        if removed:
            parts.append(f"removed as sharing a side with a test pair: {removed}")
        redacted = ", ".join(f"{k} {v:,}" for k, v in sorted(self.redactions.items()) if v)
        if redacted:
            parts.append(f"personal data redacted: {redacted}")
        return f"{self.src_lang}->{self.tgt_lang}; " + "; ".join(parts)


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class _Columns:
    source: str
    target: str
    references: tuple[str, ...]


def resolve_langs(cfg: Seq2SeqDataConfig) -> tuple[str, str]:
    default = DEFAULT_LANGS.get(cfg.dataset)
    src = cfg.src_lang or (default[0] if default else "en")
    if cfg.tgt_lang:
        tgt = cfg.tgt_lang
    elif default and cfg.src_lang and cfg.src_lang != default[0] and cfg.src_lang == default[1]:
        tgt = default[0]  # tatoeba with only src_lang="zh": the other direction
    else:
        tgt = default[1] if default else src
    return src, tgt


def _resolve_columns(cfg: Seq2SeqDataConfig, df: pd.DataFrame, where: str) -> _Columns:
    spec = DATASETS.get(cfg.dataset)
    src_lang, tgt_lang = resolve_langs(cfg)
    available = [str(c) for c in df.columns]
    if spec is not None:
        if not spec.is_seq2seq and not (cfg.source_column and cfg.target_column):
            raise DataError(f"dataset {cfg.dataset!r} has no source/target pairs (it is not a seq2seq dataset); "
                            f"set data.source_column and data.target_column (columns: {', '.join(available)})")
        lang_named = {spec.text_column, spec.target_column} == {src_lang, tgt_lang} and src_lang != tgt_lang
        src_default = src_lang if lang_named else spec.text_column
        tgt_default = tgt_lang if lang_named else spec.target_column
        if not lang_named and {spec.text_column, spec.target_column} <= set(SUPPORTED_LANGS):
            raise DataError(f"dataset {cfg.dataset!r} pairs {spec.text_column!r} with {spec.target_column!r}: set "
                            f"data.src_lang/data.tgt_lang to those two (got {src_lang!r} -> {tgt_lang!r})")
    elif "source" in available and "target" in available:
        src_default, tgt_default = "source", "target"
    elif src_lang != tgt_lang and src_lang in available and tgt_lang in available:
        src_default, tgt_default = src_lang, tgt_lang
    else:
        src_default, tgt_default = "source", "target"
    source = cfg.source_column or src_default
    target = cfg.target_column or tgt_default
    refs = (tuple(cfg.reference_columns) if cfg.reference_columns is not None
            else DEFAULT_REFERENCE_COLUMNS.get(cfg.dataset, ()))
    for col, what in ((source, "source"), (target, "target")):
        if col not in df.columns:
            raise DataError(f"{where}: no {what} column {col!r}; available columns: {', '.join(available)} "
                            f"(set data.{what}_column)")
    present = [c for c in refs if c in df.columns]
    if present and len(present) != len(refs):
        missing = [c for c in refs if c not in df.columns]
        raise DataError(f"{where}: reference columns {', '.join(missing)} missing (found {', '.join(present)}); "
                        f"available columns: {', '.join(available)} (set data.reference_columns)")
    return _Columns(source, target, tuple(present))


def _cell(value, where: str, origin: str, column: str) -> str:
    """The stripped string in a cell; '' for null. Other types raise DataError naming the row."""
    if isinstance(value, str):
        return value.strip()
    if _is_null(value):
        return ""
    raise DataError(f"{where}, {origin}, column {column!r}: expected a string, got {type(value).__name__} {value!r}")


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, cut at '\\n' only (with '\\r' removed), no trailing empty line."""
    text = _read_text(path)  # DataError naming the file and byte offset on invalid UTF-8
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_txt_pair(cfg: Seq2SeqDataConfig) -> tuple[ParallelSplit, int, str]:
    src, tgt = Path(cfg.src_file).expanduser(), Path(cfg.tgt_file).expanduser()
    for path in (src, tgt):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    src_lines, tgt_lines = read_lines(src), read_lines(tgt)
    if len(src_lines) != len(tgt_lines):
        raise DataError(f"unpaired files: {src} has {len(src_lines):,} lines but {tgt} has {len(tgt_lines):,}; "
                        "the source and target files must be aligned line by line (one segment per line)")
    sources, targets, line_numbers, empty = [], [], [], 0
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines)):
        s, t = s.strip(), t.strip()
        if not s or not t:
            empty += 1
            continue
        sources.append(s)
        targets.append(t)
        line_numbers.append(i + 1)
    where = f"{src} + {tgt}"
    if empty:
        _warn_empty(where, empty, len(src_lines))
    return (ParallelSplit(f"{src.name}+{tgt.name}", sources, targets, [[t] for t in targets],
                          {"line": line_numbers}), empty, where)


def _warn_empty(where: str, n: int, total: int) -> None:
    log.warning("%s: dropped %d of %d pairs with an empty source or target", where, n, total)


def read_pairs(cfg: Seq2SeqDataConfig, split: str, *, is_test: bool = False) -> tuple[ParallelSplit, int, _Columns]:
    """One split of a table dataset: the split, the number of pairs dropped as empty, and the columns used."""
    df = load_table(cfg.dataset, split, data_dir=cfg.data_dir)
    where = _describe(cfg.dataset, split)
    cols = _resolve_columns(cfg, df, where)
    used = {cols.source, cols.target, *cols.references}
    extra_cols = [str(c) for c in df.columns if c not in used]
    src_vals, tgt_vals = df[cols.source].tolist(), df[cols.target].tolist()
    ref_vals = [df[c].tolist() for c in cols.references]
    extra_vals = {c: df[c].tolist() for c in extra_cols}
    sources, targets, references = [], [], []
    extra: dict[str, list] = {c: [] for c in extra_cols}
    if is_test and cols.references:
        extra[cols.target] = []  # the target becomes the first reference: keep the original
    empty = 0
    for i in range(len(df)):
        origin = _row_origin(df, i)
        s = _cell(src_vals[i], where, origin, cols.source)
        t = _cell(tgt_vals[i], where, origin, cols.target)
        if not s or not t:
            empty += 1
            continue
        if cols.references:
            refs = [r for c, vals in zip(cols.references, ref_vals) if (r := _cell(vals[i], where, origin, c))]
            if not refs:
                raise DataError(f"{where}, {origin}: every reference column ({', '.join(cols.references)}) is empty")
        else:
            refs = [t]
        if is_test and cols.references:
            extra[cols.target].append(t)
            t = refs[0]
        sources.append(s)
        targets.append(t)
        references.append(refs)
        for c in extra_cols:
            v = extra_vals[c][i]
            extra[c].append(v.item() if isinstance(v, np.generic) else v)
    if empty:
        _warn_empty(where, empty, len(df))
    return ParallelSplit(f"{cfg.dataset}:{split}", sources, targets, references, extra), empty, cols


# ----------------------------------------------------------------------------------------------- splitting


def _split_exists(cfg: Seq2SeqDataConfig, name: str) -> bool:
    spec = DATASETS.get(cfg.dataset)
    if spec is not None:
        return name in spec.splits
    path = Path(cfg.dataset).expanduser()
    return path.is_dir() and any(p.is_file() and p.stem == name and p.suffix in SUPPORTED_SUFFIXES
                                 for p in path.iterdir())


def _resolve_split(cfg: Seq2SeqDataConfig, value: str | None, candidates: tuple[str, ...],
                   taken: tuple[str | None, ...]) -> str | None:
    """``value``, or for "auto" the first candidate split the dataset has that is not ``taken``."""
    if value != "auto":
        return value
    if cfg.src_file:
        return None
    return next((c for c in candidates if c not in taken and _split_exists(cfg, c)), None)


def test_file_split(cfg: Seq2SeqDataConfig) -> str | None:
    """The split whose file is the test set (AESLC's ``test``), or None when the test set is carved."""
    return _resolve_split(cfg, cfg.test_split, ("test",), (cfg.train_split,))


def _choose(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` of ``range(n)`` by a seeded shuffle, sorted."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.permutation(n)[:k])


def _complement(n: int, idx: np.ndarray) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[idx] = False
    return np.flatnonzero(mask)


def _dedup(split: ParallelSplit) -> tuple[ParallelSplit, int]:
    seen: set[tuple[str, str]] = set()
    keep = []
    for i, (s, t) in enumerate(zip(split.sources, split.targets)):
        key = (text_key(s), text_key(t))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    removed = len(split) - len(keep)
    return (split.subset(keep) if removed else split), removed


def _length_filter(split: ParallelSplit, cfg: Seq2SeqDataConfig, counts: dict[str, int]) -> ParallelSplit:
    keep = []
    for i, (s, t) in enumerate(zip(split.sources, split.targets)):
        if cfg.max_source_chars and len(s) > cfg.max_source_chars:
            counts["source_too_long"] += 1
        elif cfg.max_target_chars and len(t) > cfg.max_target_chars:
            counts["target_too_long"] += 1
        else:
            keep.append(i)
    return split.subset(keep) if len(keep) < len(split) else split


def _guard(split: ParallelSplit, test_src: set[str], test_tgt: set[str] | None) -> tuple[ParallelSplit, int]:
    keep = [i for i, (s, t) in enumerate(zip(split.sources, split.targets))
            if text_key(s) not in test_src and (test_tgt is None or text_key(t) not in test_tgt)]
    removed = len(split) - len(keep)
    return (split.subset(keep) if removed else split), removed


def assert_no_test_overlap(seen: list[ParallelSplit], test: ParallelSplit, both_sides: bool) -> None:
    """Raise LeakageError if a test source (or, with ``both_sides``, target) occurs in ``seen``."""
    src = {text_key(s) for split in seen for s in split.sources}
    tgt = {text_key(t) for split in seen for t in split.targets} if both_sides else set()
    for i, (s, t) in enumerate(zip(test.sources, test.targets)):
        if text_key(s) in src or (both_sides and text_key(t) in tgt):
            raise LeakageError(f"test example {i} also occurs in the training/validation data: {s[:80]!r}")


def _subsample(split: ParallelSplit, k: int | None, seed: int) -> ParallelSplit:
    if not k or len(split) <= k:
        return split
    return split.subset(_choose(len(split), k, seed), f"{split.name}[{k} sampled]")


def _nonempty(split: ParallelSplit, what: str) -> None:
    if len(split) == 0:
        raise DataError(f"{split.name}: no pairs left for the {what} set (see the dropped counts and filters)")


def load_parallel(cfg: Seq2SeqDataConfig) -> ParallelData:
    """Train / validation / test pairs of a seq2seq dataset (see the module docstring)."""
    cfg.validate()
    src_lang, tgt_lang = resolve_langs(cfg)
    guard = cfg.leakage_guard if cfg.leakage_guard != "auto" else ("both" if src_lang != tgt_lang else "source")
    test_name = test_file_split(cfg)
    val_name = _resolve_split(cfg, cfg.val_split, _VAL_NAMES, (cfg.train_split, test_name))
    if test_name is not None and test_name in (cfg.train_split, val_name):
        raise LeakageError(f"data.test_split '{test_name}' is also the training or validation split")

    def counts() -> dict[str, int]:
        return {"empty": 0, "duplicate": 0, "source_too_long": 0, "target_too_long": 0}

    dropped: dict[str, dict[str, int]] = {}
    if cfg.src_file:
        full, empty, _ = _read_txt_pair(cfg)
        train_key = full.name
        columns = _Columns("source", "target", ())
    else:
        full, empty, columns = read_pairs(cfg, cfg.train_split)
        train_key = cfg.train_split
    dropped[train_key] = counts()
    dropped[train_key]["empty"] = empty
    if cfg.dedup:
        full, dropped[train_key]["duplicate"] = _dedup(full)
    _nonempty(full, "training")

    # the test set: its own file (never changed), or carved from the training file before anything else
    if test_name is None:
        if cfg.test_size >= len(full):
            raise DataError(f"{full.name} has {len(full):,} pairs: too few to carve a test set of "
                            f"{cfg.test_size:,} (lower data.test_size)")
        idx = _choose(len(full), cfg.test_size, cfg.seed + 1)
        test = full.subset(idx, f"{full.name}[test {cfg.test_size}, seed {cfg.seed}]")
        full = full.subset(_complement(len(full), idx))
    else:
        test, empty, _ = read_pairs(cfg, test_name, is_test=True)
        dropped[test_name] = {"empty": empty}
        _nonempty(test, "test")
    test = _subsample(test, cfg.max_test_examples, cfg.seed + 3)

    val: ParallelSplit | None = None
    if val_name is not None:
        val, empty, _ = read_pairs(cfg, val_name)
        dropped[val_name] = counts()
        dropped[val_name]["empty"] = empty
        if cfg.dedup:
            val, dropped[val_name]["duplicate"] = _dedup(val)

    # the leakage guard, then the length filters (train/validation only)
    test_src = {text_key(s) for s in test.sources}
    test_tgt = {text_key(t) for t in test.targets} if guard == "both" else None
    removed: dict[str, int] = {}
    full, removed[train_key] = _guard(full, test_src, test_tgt)
    full = _length_filter(full, cfg, dropped[train_key])
    if val is not None:
        val, removed[val_name] = _guard(val, test_src, test_tgt)
        val = _length_filter(val, cfg, dropped[val_name])

    if val is not None:
        train = full
    elif cfg.val_size == 0:
        train, val = full, full.subset([], f"{full.name}[no validation]")
    else:
        if cfg.val_size >= len(full):
            raise DataError(f"{full.name} has {len(full):,} pairs left: too few to carve a validation set of "
                            f"{cfg.val_size:,} (lower data.val_size)")
        idx = _choose(len(full), cfg.val_size, cfg.seed)
        val = full.subset(idx, f"{full.name}[validation {cfg.val_size}, seed {cfg.seed}]")
        train = full.subset(_complement(len(full), idx))
    train = _subsample(train, cfg.max_train_examples, cfg.seed + 2)
    val = _subsample(val, cfg.max_val_examples, cfg.seed + 4)
    if cfg.references_as_targets:
        train, val = _expand_references(train), _first_reference(val)
    _nonempty(train, "training")
    redactions: dict[str, int] = {}
    if cfg.redact_pii:  # after the split (the same with or without it), then the guard once more: two pairs that
        # differed only in an e-mail address or a phone number are the same pair now
        train, val, test = (_redact(s, redactions) for s in (train, val, test))
        test_src = {text_key(s) for s in test.sources}
        test_tgt = {text_key(t) for t in test.targets} if guard == "both" else None
        train, n_train = _guard(train, test_src, test_tgt)
        val, n_val = _guard(val, test_src, test_tgt)
        removed[train_key] = removed.get(train_key, 0) + n_train
        val_key = val_name if val_name is not None else train_key
        removed[val_key] = removed.get(val_key, 0) + n_val
        _nonempty(train, "training")
    assert_no_test_overlap([train, val], test, both_sides=guard == "both")
    return ParallelData(train, val, test, src_lang, tgt_lang, columns.source, columns.target, dropped, removed,
                        redactions)


def _expand_references(split: ParallelSplit) -> ParallelSplit:
    """One (source, reference) pair per reference of each example, named ``...[references]``."""
    idx, targets = [], []
    for i, refs in enumerate(split.references):
        for r in refs:
            idx.append(i)
            targets.append(r)
    out = split.subset(idx, f"{split.name}[references]")
    out.targets = targets
    out.references = [[t] for t in targets]
    return out


def _first_reference(split: ParallelSplit) -> ParallelSplit:
    """``split`` with each example's first reference as its target (validation loss in the references' style)."""
    return ParallelSplit(split.name, split.sources, [r[0] for r in split.references], split.references, split.extra)


def _redact(split: ParallelSplit, counts: dict[str, int]) -> ParallelSplit:
    """``split`` with personal data in sources, targets and references replaced by typed placeholders
    (:func:`scratchlm.data.clean.redact_pii`); ``counts`` gains the spans replaced per kind."""
    from .clean import redact_pii

    sources = [redact_pii(t, counts) for t in split.sources]
    targets, references = [], []
    for target, refs in zip(split.targets, split.references):
        new = redact_pii(target, counts)
        targets.append(new)
        # the usual single reference is the target itself: counted once
        references.append([new] if refs == [target] else [redact_pii(r, counts) for r in refs])
    return ParallelSplit(split.name, sources, targets, references, split.extra)
