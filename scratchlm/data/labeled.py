"""Labelled text for classification: load, check, clean and split, with the test split kept apart.

``load_labeled(cfg)`` returns train / validation / test :class:`LabeledSplit` s:

* ``train_split`` is read, and the validation set is carved from it by a seeded, stratified shuffle
  (``val_fraction``) unless ``val_split`` names a labelled split of its own;
* ``test_split`` is the labelled split reported once at the end; with ``test_split: null`` a
  ``test_fraction`` is carved from train first (SMS spam: a seeded 80/10/10 split of its single file);
* a training or validation text that also occurs in the test set is removed and counted, so the test
  set stays unseen (the guard also runs when the splits come from different files).

Every label must be one of the label set (the registry's names, ``label_names`` or the values found in
train); a missing, unknown or -1 (unlabelled) label raises :class:`LabelError` naming the split and row.
Empty texts raise too. Long texts are not cut here: :func:`truncate_head_tail` does that per tokenizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .clean import CleanConfig, clean_text
from .errors import LeakageError
from .registry import DATASETS
from .sources import DataError, _describe, _is_null, _row_origin, load_table


class LabelError(DataError):
    """A label column that cannot be used as it is (missing, unknown or unlabelled rows, one class)."""


@dataclass
class LabeledDataConfig:
    dataset: str = "imdb"  # registry name, or a local txt/jsonl/csv/parquet file or folder of split files
    train_split: str = "train"
    val_split: str | None = None  # None: carve val_fraction from train (seeded, stratified); 0: no validation
    test_split: str | None = "test"  # the labelled split reported once; None: carve test_fraction from train
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    text_column: str | None = None  # default: the registry's column, else "text"
    label_column: str | None = None  # default: the registry's column, else "label"
    # class names in label-id order; for string labels they are the values themselves. None: the registry's
    # names (integer labels 0..k-1), else the sorted distinct training labels.
    label_names: list[str] | None = None
    max_train_examples: int | None = None  # seeded subsample of train (after the carve-outs), for quick runs
    max_val_examples: int | None = None  # seeded subsample of the validation set, for quick runs
    max_test_examples: int | None = None  # seeded subsample of the test set, for quick runs
    clean: CleanConfig = field(default_factory=lambda: CleanConfig(unicode_form="NFC", dedup=False))
    data_dir: str | None = None
    seed: int = 1337

    def validate(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"data.{name} must be in [0, 1), got {v}")
        if self.test_split is None and self.test_fraction <= 0:
            raise ValueError("data.test_fraction must be > 0 when data.test_split is null")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction leave too little training data")
        if self.test_split is not None and self.test_split in (self.train_split, self.val_split):
            raise LeakageError(f"data.test_split '{self.test_split}' is also the training or validation split")


@dataclass
class LabeledSplit:
    name: str  # "dataset:split" (with "[carved]" for seeded carve-outs)
    texts: list[str]
    labels: np.ndarray  # int64 label ids 0..k-1

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self, num_labels: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_labels).tolist()

    def subset(self, idx, name: str | None = None) -> LabeledSplit:
        idx = np.asarray(idx, dtype=np.int64)
        return LabeledSplit(name or self.name, [self.texts[i] for i in idx], self.labels[idx])


@dataclass
class LabeledData:
    train: LabeledSplit
    val: LabeledSplit
    test: LabeledSplit | None
    label_names: list[str]
    removed_overlap: dict[str, int]  # split -> texts dropped because they are also in the test set
    label_values: list  # the raw label value of each class id (ints or strings)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def summary(self) -> str:
        parts = []
        for s in (self.train, self.val, self.test):
            if s is not None:
                counts = ", ".join(f"{n} {c:,}" for n, c in zip(self.label_names, s.counts(self.num_labels)))
                parts.append(f"{s.name}: {len(s):,} ({counts})")
        dropped = {k: v for k, v in self.removed_overlap.items() if v}
        if dropped:
            parts.append("removed as also in test: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
        return "; ".join(parts)


def text_key(text: str) -> str:
    """What counts as 'the same text' for the leakage guard: whitespace-normalised, case-folded."""
    return hashlib.sha1(" ".join(text.split()).casefold().encode("utf-8")).hexdigest()


def _columns(cfg: LabeledDataConfig) -> tuple[str, str, tuple[str, ...] | None]:
    spec = DATASETS.get(cfg.dataset)
    text_col = cfg.text_column or (spec.text_column if spec else "text")
    label_col = cfg.label_column or (spec.label_column if spec and spec.label_column else "label")
    names = tuple(cfg.label_names) if cfg.label_names else (spec.label_names if spec else None)
    return text_col, label_col, names


def read_split(cfg: LabeledDataConfig, split: str) -> tuple[list[str], list, list[str]]:
    """Texts, raw labels and a description of each row's origin ("row 12 (file.csv)") of one split."""
    df = load_table(cfg.dataset, split, data_dir=cfg.data_dir)
    text_col, label_col, _ = _columns(cfg)
    where = _describe(cfg.dataset, split)
    for col, what in ((text_col, "text"), (label_col, "label")):
        if col not in df.columns:
            raise DataError(f"{where}: no {what} column {col!r}; available columns: "
                            f"{', '.join(map(str, df.columns))} (set data.{what}_column)")
    texts, labels, origins = [], [], []
    for i, (text, label) in enumerate(zip(df[text_col].tolist(), df[label_col].tolist())):
        origin = _row_origin(df, i)
        if not isinstance(text, str):
            raise DataError(f"{where}, {origin}, column {text_col!r}: expected a string, got "
                            f"{type(text).__name__} {text!r}")
        if _is_null(label) or (isinstance(label, str) and not label.strip()):
            raise LabelError(f"{where}, {origin}, column {label_col!r}: missing label")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if isinstance(label, (int, np.integer)) and int(label) == -1:
            raise LabelError(f"{where}, {origin}, column {label_col!r}: label -1 marks an unlabelled row "
                             f"(e.g. IMDb 'unsupervised', ChnSentiCorp 'test'); use a labelled split")
        texts.append(text)
        labels.append(label.item() if isinstance(label, np.generic) else label)
        origins.append(origin)
    if not texts:
        raise DataError(f"{where} has no rows")
    return texts, labels, origins


def resolve_label_values(cfg: LabeledDataConfig, train_labels: list) -> tuple[list, list[str]]:
    """(raw value of each class id, class names)."""
    _, _, names = _columns(cfg)
    found = sorted(set(train_labels), key=lambda v: (isinstance(v, str), v))
    if all(isinstance(v, (int, np.integer)) for v in found):
        if names is not None:
            return list(range(len(names))), list(names)
        if found[0] < 0:
            raise LabelError(f"integer labels must be 0..k-1, found {found[0]}")
        k = int(found[-1]) + 1
        return list(range(k)), [str(i) for i in range(k)]
    if names is not None:  # string labels: the names are the values, in the order given
        return list(names), list(names)
    return found, [str(v) for v in found]


def encode_labels(labels: list, values: list, names: list[str], where: str, origins: list[str]) -> np.ndarray:
    index = {v: i for i, v in enumerate(values)}
    out = np.empty(len(labels), dtype=np.int64)
    for i, v in enumerate(labels):
        j = index.get(v)
        if j is None and isinstance(v, str) and v.strip().lstrip("-").isdigit():
            j = index.get(int(v))
        if j is None:
            raise LabelError(f"{where}, {origins[i]}: label {v!r} is not one of the label set "
                             f"{dict(zip(names, values))}")
        out[i] = j
    return out


def _check_texts(texts: list[str], where: str, origins: list[str]) -> None:
    for i, t in enumerate(texts):
        if not t.strip():
            raise DataError(f"{where}, {origins[i]}: empty text (drop the row or fill it in)")


def stratified_carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved) row indices: ``fraction`` of each class (at least one row where a class has two),
    chosen by a seeded shuffle; both sorted."""
    rng = np.random.Generator(np.random.PCG64(seed))
    carved = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        n = int(round(len(rows) * fraction))
        if n == 0 and len(rows) >= 2 and fraction > 0:
            n = 1
        carved.append(rows[:n])
    carved_idx = np.sort(np.concatenate(carved)) if carved else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[carved_idx] = False
    return np.flatnonzero(mask), carved_idx


def load_labeled(cfg: LabeledDataConfig, *, with_test: bool = True, log=print) -> LabeledData:
    """Train / validation / test splits of a labelled dataset (see the module docstring)."""
    cfg.validate()
    texts, raw, origins = read_split(cfg, cfg.train_split)
    where = _describe(cfg.dataset, cfg.train_split)
    values, names = resolve_label_values(cfg, raw)
    labels = encode_labels(raw, values, names, where, origins)
    texts = [clean_text(t, cfg.clean) for t in texts]
    _check_texts(texts, where, origins)
    present = np.unique(labels)
    if len(present) < 2:
        raise LabelError(f"{where}: every training row has label {names[int(present[0])]!r}; a classifier "
                         f"needs at least two classes")
    full = LabeledSplit(f"{cfg.dataset}:{cfg.train_split}", texts, labels)

    test = None
    if cfg.test_split is None:
        keep, carved = stratified_carve(full.labels, cfg.test_fraction, cfg.seed + 1)
        test = full.subset(carved, f"{full.name}[test {cfg.test_fraction:g}, seed {cfg.seed}]")
        full = full.subset(keep)
    elif with_test:
        t_texts, t_raw, t_origins = read_split(cfg, cfg.test_split)
        t_where = _describe(cfg.dataset, cfg.test_split)
        t_texts = [clean_text(t, cfg.clean) for t in t_texts]
        _check_texts(t_texts, t_where, t_origins)
        test = LabeledSplit(f"{cfg.dataset}:{cfg.test_split}",
                            t_texts, encode_labels(t_raw, values, names, t_where, t_origins))
    if test is not None and cfg.max_test_examples and len(test) > cfg.max_test_examples:
        _, sub = stratified_carve(test.labels, cfg.max_test_examples / len(test), cfg.seed + 3)
        test = test.subset(sub, f"{test.name}[{len(sub)} sampled]")

    if cfg.val_split is not None:
        v_texts, v_raw, v_origins = read_split(cfg, cfg.val_split)
        v_where = _describe(cfg.dataset, cfg.val_split)
        v_texts = [clean_text(t, cfg.clean) for t in v_texts]
        _check_texts(v_texts, v_where, v_origins)
        val = LabeledSplit(f"{cfg.dataset}:{cfg.val_split}", v_texts,
                           encode_labels(v_raw, values, names, v_where, v_origins))
        train = full
    elif cfg.val_fraction == 0:  # no validation set (the classical baselines, which select nothing)
        val = full.subset([], f"{full.name}[no validation]")
        train = full
    else:
        # fractions are of the whole training file: with a carved test set the validation share grows
        fraction = cfg.val_fraction / (1.0 - cfg.test_fraction) if cfg.test_split is None else cfg.val_fraction
        keep, carved = stratified_carve(full.labels, fraction, cfg.seed)
        val = full.subset(carved, f"{full.name}[validation {cfg.val_fraction:g}, seed {cfg.seed}]")
        train = full.subset(keep)

    removed = {"train": 0, "validation": 0}
    if test is not None:  # the leakage guard: no test text in train or validation
        test_keys = {text_key(t) for t in test.texts}
        for key, split in (("train", train), ("validation", val)):
            keep_idx = [i for i, t in enumerate(split.texts) if text_key(t) not in test_keys]
            removed[key] = len(split) - len(keep_idx)
            if removed[key]:
                split_new = split.subset(keep_idx)
                if key == "train":
                    train = split_new
                else:
                    val = split_new
        assert_disjoint(train.texts + val.texts, test.texts)
    if cfg.max_train_examples and len(train) > cfg.max_train_examples:
        _, sub = stratified_carve(train.labels, cfg.max_train_examples / len(train), cfg.seed + 2)
        train = train.subset(sub, f"{train.name}[{len(sub)} sampled]")
    if cfg.max_val_examples and len(val) > cfg.max_val_examples:
        _, sub = stratified_carve(val.labels, cfg.max_val_examples / len(val), cfg.seed + 4)
        val = val.subset(sub, f"{val.name}[{len(sub)} sampled]")
    if len(np.unique(train.labels)) < 2:
        raise LabelError(f"{train.name}: after the validation/test carve-outs only one class is left in train")
    return LabeledData(train, val, test, list(names), removed, list(values))


def assert_disjoint(seen: list[str], test: list[str]) -> None:
    """Raise LeakageError if any test text (normalised) is among ``seen``."""
    keys = {text_key(t) for t in seen}
    for i, t in enumerate(test):
        if text_key(t) in keys:
            raise LeakageError(f"test example {i} also occurs in the training/validation data: {t[:80]!r}")


def pretraining_corpora(config: dict) -> list[tuple[str, str]]:
    """(source, split) of every corpus a model was pretrained on, following ``backbone`` down the lineage
    of continued pretraining (``config`` is a saved config.json)."""
    out = []
    while config:
        for c in (config.get("data") or {}).get("corpora") or []:
            if isinstance(c, dict):
                out.append((c.get("source"), c.get("split", "train")))
            else:
                source, _, split = str(c).partition(":")
                out.append((source, split or "train"))
        config = config.get("backbone") or {}
    return out


def _validation_reads(config: dict) -> list[tuple[str, str]]:
    """(source, split) that pretraining read as validation text (``val_split``, "auto" resolved as ``prepare``
    resolves it), down the lineage."""
    out = []
    while config:
        for c in (config.get("data") or {}).get("corpora") or []:
            if isinstance(c, dict) and c.get("task_recipe"):
                continue  # validation rows carved from the training split, as the task's classifier carves them
            source = c.get("source") if isinstance(c, dict) else str(c).partition(":")[0]
            val = c.get("val_split", "auto") if isinstance(c, dict) else "auto"
            spec = DATASETS.get(source)
            if val == "auto":
                val = "validation" if spec is not None and "validation" in spec.split_names else None
            if val:
                out.append((source, val))
        config = config.get("backbone") or {}
    return out


def assert_not_pretrained_on(config: dict, dataset: str, test_split: str | None, data_dir=None) -> None:
    """Refuse a backbone whose recorded pretraining corpora include the held-out test split.

    ``config`` is the backbone's saved config.json; a corpus names the test split either as
    ``dataset:split`` or as a path to the same file. A continued-pretraining model records the model it
    started from under ``backbone``: its corpora are checked too, all the way down."""
    if test_split is None:
        return
    spec = DATASETS.get(dataset)
    test_file = None
    if spec is not None and test_split in spec.splits:
        test_file = spec.splits[test_split]
    for source, split in pretraining_corpora(config):
        if source == dataset and split == test_split:
            raise LeakageError(f"the pretrained model was trained on {dataset}:{test_split}, the split this run "
                               f"reports as its test set; pretrain without it")
        if test_file and isinstance(source, str) and source.endswith(test_file) and spec.folder in source:
            raise LeakageError(f"the pretrained model was trained on {source}, which is {dataset}:{test_split}, "
                               f"the split this run reports as its test set")
    for source, split in _validation_reads(config):
        if source == dataset and split == test_split:
            raise LeakageError(f"the pretrained model's validation text was {dataset}:{test_split}, the split this "
                               f"run reports as its test set; give that corpus `val_split: null` (a held-out "
                               f"fraction of its training text) or another split")
