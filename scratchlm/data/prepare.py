"""Corpus mixture -> cleaning -> byte-level BPE tokenizer -> train/validation token shards.

The output folder holds ``tokenizer.json``, ``train.bin`` (+ header), ``val.bin`` (all validation text)
and ``val_<corpus>.bin`` per corpus, ``cleaning.json`` and ``prepare.json`` (the data config that made
them). Re-running with the same config reuses the folder. Train and validation text never mix: named
datasets use their own validation split, other sources hold out a seeded fraction of whole documents.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import ConfigError, find_recipe, from_dict, load_recipe, to_dict
from ..tokenizer import Tokenizer, train_tokenizer
from .clean import CleanConfig, CleaningReport, clean_texts, unwrap_lines
from .errors import LeakageError
from .labeled import LabeledDataConfig, load_labeled, text_key
from .registry import DATASETS
from .shards import TokenShard, write_shard
from .sources import DataError, load_texts

# Splits that hold evaluation data: they never reach tokenizer training or pretraining.
HELD_OUT_SPLITS = ("test",)


@dataclass
class CorpusConfig:
    source: str  # registry name or a local file/folder
    split: str = "train"
    val_split: str | None = "auto"  # "auto": the dataset's validation split, else a held-out fraction
    column: str | None = None
    max_docs: int | None = None
    max_bytes: int | None = None  # cap the training text taken from this corpus
    # join hard-wrapped lines inside paragraphs (Project Gutenberg wraps at ~70 characters), so a
    # newline token means a paragraph break as it does in the other corpora
    unwrap_lines: bool = False
    # None = data.clean.redact_pii; a recipe can turn redaction off (or on) for one corpus
    redact_pii: bool | None = None
    # splits of the same dataset whose texts must not reach this corpus, e.g. a task recipe's test set
    # (ChnSentiCorp's train split repeats 335 of its 1,200 validation reviews verbatim): a document that
    # also occurs there (whitespace-normalised, case-folded) is dropped from training and validation
    exclude_splits: list[str] = field(default_factory=list)
    # a classification recipe (name or path): the corpus is the text of that recipe's training rows, carved,
    # cleaned and freed of test overlaps exactly as its classifier sees them, and its validation rows are the
    # corpus's validation text -- the in-domain stage for a dataset whose test set is carved from the same file
    # (SMS spam), where no split name would keep the test rows out
    task_recipe: str | None = None

    @classmethod
    def parse(cls, text: str) -> CorpusConfig:
        """``name`` or ``name:split`` (e.g. ``imdb:unsupervised``)."""
        source, _, split = text.partition(":")
        return cls(source=source, split=split or "train")

    @property
    def name(self) -> str:
        base = Path(self.source).stem if self.source not in DATASETS else self.source
        return base if self.split == "train" else f"{base}_{self.split}"

    def validate(self) -> None:
        if self.split in HELD_OUT_SPLITS:
            raise LeakageError(f"corpus '{self.source}': split '{self.split}' is held-out evaluation data and "
                               f"may not be used for tokenizer training or pretraining")
        if self.exclude_splits and self.source not in DATASETS:
            raise DataError(f"corpus '{self.source}': exclude_splits needs a named dataset (one of "
                            f"{sorted(DATASETS)})")
        if self.task_recipe and self.split != "train":
            raise DataError(f"corpus '{self.source}': task_recipe reads the recipe's training rows; split "
                            f"'{self.split}' cannot be combined with it")
        if self.split in self.exclude_splits:
            raise DataError(f"corpus '{self.source}': exclude_splits {self.exclude_splits} names the corpus's own "
                            f"split '{self.split}'")


@dataclass
class DataConfig:
    corpora: list[CorpusConfig] = field(default_factory=lambda: [CorpusConfig("tinyshakespeare")])
    data_dir: str | None = None  # where named datasets live; default $SCRATCHLM_DATA_DIR
    val_fraction: float = 0.05  # for sources without a validation split
    clean: CleanConfig = field(default_factory=CleanConfig)
    tokenizer: str | None = None  # an existing tokenizer.json (or folder) instead of training one
    vocab_size: int = 8192
    tokenizer_max_bytes: int = 20_000_000  # text sampled (evenly across corpora) to train the BPE
    min_frequency: int = 2
    sampling: str = "random"  # "random" windows or "epoch" (every window once per epoch)
    seed: int = 1234
    num_workers: int | None = None  # tokenizer threads (RAYON_NUM_THREADS); None = all cores

    def validate(self) -> None:
        if not self.corpora:
            raise ValueError("data.corpora is empty: name at least one dataset or file")
        for corpus in self.corpora:  # the leakage guard, also for configs built in code
            corpus.validate()
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.sampling not in ("random", "epoch"):
            raise ValueError(f"data.sampling must be 'random' or 'epoch', got {self.sampling!r}")


@dataclass
class PreparedData:
    folder: Path
    tokenizer: Tokenizer
    train: TokenShard
    val: TokenShard | None
    val_by_corpus: dict[str, TokenShard]
    cleaning: dict


def _fingerprint(cfg: DataConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _parallel_docs(cfg: DataConfig, corpus: CorpusConfig) -> tuple[list[str], list[str]]:
    """The monolingual sides of a paired (seq2seq) dataset as documents, one sentence / e-mail each.

    The pairs come from :func:`~scratchlm.data.parallel.load_parallel` with the task recipes' default split
    (seeded 2,000 test / 1,000 validation pairs carved from Tatoeba's single file, the leakage guard
    applied), so no side of a test pair -- nor anything the guard removes -- reaches pretraining.
    ``column`` picks one side (``source``/``target`` or a language column such as ``en``); default both."""
    from .parallel import Seq2SeqDataConfig, load_parallel

    if corpus.split != "train":
        raise LeakageError(f"corpus '{corpus.source}': a paired dataset is pretrained on its training pairs "
                           f"only (asked for split '{corpus.split}')")
    spec = DATASETS[corpus.source]
    sides = {"source": (True, False), "target": (False, True), None: (True, True),
             spec.text_column: (True, False), spec.target_column: (False, True)}
    if corpus.column not in sides:
        raise ValueError(f"corpus '{corpus.source}': column must be source, target, {spec.text_column} or "
                         f"{spec.target_column}, got {corpus.column!r}")
    src, tgt = sides[corpus.column]
    # redaction is the corpus's cleaning (data.clean.redact_pii, or the corpus's own redact_pii), done below
    pdata = load_parallel(Seq2SeqDataConfig(dataset=corpus.source, data_dir=cfg.data_dir, redact_pii=False))

    def docs(split) -> list[str]:
        return [*(split.sources if src else []), *(split.targets if tgt else [])]

    return docs(pdata.train), docs(pdata.val)


def _split_docs(cfg: DataConfig, corpus: CorpusConfig) -> tuple[list[str], list[str]]:
    """Training and validation documents of one corpus, never overlapping."""
    spec = DATASETS.get(corpus.source)
    if spec is not None and spec.is_seq2seq:
        train, val = _parallel_docs(cfg, corpus)
        return _cap(train, corpus), val
    if corpus.task_recipe:
        train, val = _task_docs(cfg, corpus)
        return _cap(train, corpus), val
    train = load_texts(corpus.source, corpus.split, corpus.column, data_dir=cfg.data_dir, dropna=True)
    val: list[str] = []
    val_split = corpus.val_split
    if val_split == "auto":
        val_split = "validation" if spec is not None and "validation" in spec.split_names else None
    if val_split and val_split not in HELD_OUT_SPLITS:
        val = load_texts(corpus.source, val_split, corpus.column, data_dir=cfg.data_dir, dropna=True)
    elif len(train) > 1:  # hold out a seeded fraction of whole documents
        order = list(range(len(train)))
        random.Random(cfg.seed).shuffle(order)
        n_val = max(1, int(len(train) * cfg.val_fraction))
        held = set(order[:n_val])
        val = [t for i, t in enumerate(train) if i in held]
        train = [t for i, t in enumerate(train) if i not in held]
    return _cap(train, corpus), val


def _task_docs(cfg: DataConfig, corpus: CorpusConfig) -> tuple[list[str], list[str]]:
    """The training and validation texts of the classification recipe ``corpus.task_recipe`` (its ``data``
    section, as its classifier loads it); its test rows are left out."""
    path = find_recipe(corpus.task_recipe)
    section = load_recipe(path).get("data")
    if not isinstance(section, dict) or "dataset" not in section:
        raise ConfigError(f"{path}: task_recipe needs a classification recipe, with `data.dataset`")
    data_cfg = from_dict(LabeledDataConfig, section, prefix=f"{path}: data")
    if data_cfg.dataset != corpus.source:
        raise DataError(f"corpus '{corpus.source}': task_recipe {path} is about dataset '{data_cfg.dataset}'")
    if cfg.data_dir:
        data_cfg.data_dir = cfg.data_dir
    data = load_labeled(data_cfg, log=lambda *a, **k: None)
    return list(data.train.texts), list(data.val.texts)


def _exclude(cfg: DataConfig, corpus: CorpusConfig, train: list[str], val: list[str]
             ) -> tuple[list[str], list[str], int]:
    """``train`` and ``val`` less the documents whose text also occurs in one of ``corpus.exclude_splits``,
    and how many were dropped."""
    banned = {text_key(t) for split in corpus.exclude_splits
              for t in load_texts(corpus.source, split, corpus.column, data_dir=cfg.data_dir, dropna=True)}
    kept_train = [d for d in train if text_key(d) not in banned]
    kept_val = [d for d in val if text_key(d) not in banned]
    return kept_train, kept_val, len(train) - len(kept_train) + len(val) - len(kept_val)


def _cap(train: list[str], corpus: CorpusConfig) -> list[str]:
    if corpus.max_docs:
        train = train[: corpus.max_docs]
    if corpus.max_bytes:
        kept, total = [], 0
        for t in train:
            total += len(t.encode("utf-8"))
            if total > corpus.max_bytes and kept:
                break
            kept.append(t)
        train = kept
    return train


def _tokenizer_sample(per_corpus: list[list[str]], max_bytes: int, seed: int) -> list[str]:
    """An even byte budget per corpus so a large corpus does not crowd out a small language."""
    budget = max_bytes // max(1, len(per_corpus))
    sample: list[str] = []
    for docs in per_corpus:
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        used = 0
        for i in order:
            sample.append(docs[i])
            used += len(docs[i].encode("utf-8"))
            if used >= budget:
                break
    return sample


def prepare(cfg: DataConfig, out: str | Path, *, progress: bool = True, log=print) -> PreparedData:
    """Prepare ``out`` (or reuse it when it was prepared from the same config). A write that fails (disk
    full) raises an OSError naming the folder; ``prepare.json`` is written last, so nothing half-written
    is ever reused."""
    try:
        return _prepare(cfg, out, progress=progress, log=log)
    except OSError as e:
        from ..train.fsutil import reraise_with_path

        raise reraise_with_path(e, out, "prepare the data in") from e


def _prepare(cfg: DataConfig, out: str | Path, *, progress: bool, log) -> PreparedData:
    cfg.validate()
    folder = Path(out)
    stamp = folder / "prepare.json"
    fp = _fingerprint(cfg)
    if stamp.exists() and json.loads(stamp.read_text("utf-8")).get("fingerprint") == fp:
        try:
            return load_prepared(folder)
        except (OSError, ValueError) as e:
            log(f"prepare: cached data in {folder} is unusable ({e}); rebuilding")
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.num_workers:
        import os

        os.environ["RAYON_NUM_THREADS"] = str(cfg.num_workers)
    report = CleaningReport()
    per_corpus_train: list[list[str]] = []
    per_corpus_val: dict[str, list[str]] = {}
    cleaning: dict = {}
    for corpus in cfg.corpora:
        corpus.validate()
        train, val = _split_docs(cfg, corpus)
        excluded = 0
        if corpus.exclude_splits:
            train, val, excluded = _exclude(cfg, corpus, train, val)
            log(f"prepare: removed {excluded} documents of {corpus.name} that also occur in "
                f"{', '.join(corpus.exclude_splits)}")
        if corpus.unwrap_lines:
            train, val = unwrap_lines(train), unwrap_lines(val)
        clean_cfg = cfg.clean if corpus.redact_pii is None else replace(cfg.clean, redact_pii=corpus.redact_pii)
        train, r_train = clean_texts(train, clean_cfg)
        val, r_val = clean_texts(val, clean_cfg)
        if not train:
            raise DataError(f"corpus '{corpus.source}' ({corpus.split}) has no text left after cleaning")
        val_set = set(val)
        overlap = sum(1 for t in train if t in val_set)
        if overlap:  # exact duplicates across the split would leak validation text into training
            train = [t for t in train if t not in val_set]
            log(f"prepare: removed {overlap} training documents of {corpus.name} that also appear in validation")
        cleaning[corpus.name] = {"train": r_train.to_dict(), "validation": r_val.to_dict(),
                                 "train_docs": len(train), "val_docs": len(val), "train_val_overlap_removed": overlap,
                                 **({"excluded": excluded} if corpus.exclude_splits else {})}
        report.merge(r_train)
        per_corpus_train.append(train)
        if val:
            per_corpus_val[corpus.name] = val
        log(f"prepare: {corpus.name}: {len(train):,} train / {len(val):,} validation documents")
    if cfg.tokenizer:
        tokenizer = Tokenizer.load(cfg.tokenizer)
    else:
        sample = _tokenizer_sample(per_corpus_train, cfg.tokenizer_max_bytes, cfg.seed)
        log(f"prepare: training a {cfg.vocab_size}-token byte-level BPE on {sum(map(len, sample)):,} characters")
        tokenizer = train_tokenizer(sample, cfg.vocab_size, min_frequency=cfg.min_frequency, show_progress=progress)
    tokenizer.save(folder)
    # interleave documents of all corpora in a seeded order so every window position mixes sources
    train_docs = [d for docs in per_corpus_train for d in docs]
    random.Random(cfg.seed).shuffle(train_docs)
    write_shard(train_docs, tokenizer, folder / "train", progress=progress, desc="encode train")
    all_val: list[str] = []
    for name, docs in per_corpus_val.items():
        write_shard(docs, tokenizer, folder / f"val_{name}", progress=progress, desc=f"encode val {name}")
        all_val.extend(docs)
    if all_val:
        write_shard(all_val, tokenizer, folder / "val", progress=progress, desc="encode val")
    held_out = [t for docs in per_corpus_val.values() for t in docs][:2000]
    compression = tokenizer.bytes_per_token(held_out) if held_out else None
    (folder / "cleaning.json").write_text(json.dumps(cleaning, indent=2) + "\n", "utf-8")
    stamp.write_text(json.dumps({"fingerprint": fp, "config": to_dict(cfg), "val_corpora": list(per_corpus_val),
                                 "bytes_per_token_val": compression}, indent=2) + "\n", "utf-8")
    log(f"prepare: cleaning: {report.summary()}")
    if compression:
        log(f"prepare: tokenizer compression on held-out text: {compression:.3f} bytes/token")
    return load_prepared(folder)


def load_prepared(folder: str | Path) -> PreparedData:
    folder = Path(folder)
    meta = json.loads((folder / "prepare.json").read_text("utf-8"))
    tokenizer = Tokenizer.load(folder)
    train = TokenShard.open(folder / "train")
    train.check_tokenizer(tokenizer)
    val = TokenShard.open(folder / "val") if (folder / "val.json").exists() else None
    by_corpus = {name: TokenShard.open(folder / f"val_{name}") for name in meta.get("val_corpora", [])}
    cleaning = json.loads((folder / "cleaning.json").read_text("utf-8")) if (folder / "cleaning.json").exists() else {}
    return PreparedData(folder, tokenizer, train, val, by_corpus, cleaning)
