"""Known datasets: where their files live, which columns hold text/labels/targets, and where to download them.

A :class:`DatasetSpec` only describes a dataset; :mod:`scratchlm.data.sources` does the reading. File
names and columns match the shared data folder (``$SCRATCHLM_DATA_DIR/<folder>/<file>``, see its README)
and, where one exists, the dataset's Hugging Face version, so a download lands in the same layout.

Downloads are pinned: every URL names a fixed commit and comes with the sha256 of its file (checked after
the download, see :func:`scratchlm.data.sources.fetch_url`), and the Hugging Face fallback loads a fixed
hub commit (``hf_revision``). Hub ids without a known commit have ``hf_revision=None``, which disables
their hub fallback instead of reading whatever the branch head is that day: ``sms_spam``
(ucirvine/sms_spam), ``chnsenticorp`` (seamew/ChnSentiCorp) and ``aeslc`` (Yale-LILY/aeslc) -- fill them
in once looked up (``huggingface_hub.HfApi().dataset_info(id).sha``); they are in the data folder anyway.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class UnknownDatasetError(KeyError, ValueError):
    """A dataset name that is not in :data:`DATASETS` (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:  # KeyError would print the message wrapped in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one dataset. ``splits`` maps split name -> file name inside the dataset folder."""

    name: str
    description: str
    splits: dict[str, str]
    text_column: str
    label_column: str | None = None
    # seq2seq output column (summary / translation); the input is ``text_column``
    target_column: str | None = None
    label_names: tuple[str, ...] | None = None
    hf_id: str | None = None
    hf_config: str | None = None
    # file name -> official download URL, pinned to a commit; files without one fall back to the hub
    urls: dict[str, str] = field(default_factory=dict)
    # file name -> sha256 (hex) of the file behind ``urls``: required for each URL, checked after download
    sha256: dict[str, str] = field(default_factory=dict)
    # the hub commit ``load_dataset(..., revision=)`` reads; None: not pinned, so no hub fallback
    hf_revision: str | None = None
    license: str = "unknown"
    # fine to use as generic pretraining text (see ``pretrain_splits`` for which splits)
    general_text: bool = False
    # splits safe to pretrain on: held-out splits are excluded so evaluation stays clean
    pretrain_splits: tuple[str, ...] = ()
    # split -> (start, end) fraction of the characters of a single-file corpus (nanoGPT-style split)
    derived_splits: dict[str, tuple[float, float]] = field(default_factory=dict)
    # hub column name -> our column name, for hub copies whose names differ
    hf_columns: dict[str, str] = field(default_factory=dict)
    # sub-folder of the data/cache dir; defaults to ``name``
    folder: str = ""

    def __post_init__(self) -> None:
        if not self.folder:
            object.__setattr__(self, "folder", self.name)  # frozen: set the default through object
        for file_name, url in self.urls.items():  # an unchecked download is a bug in the registry
            digest = self.sha256.get(file_name)
            if digest is None or not _SHA256.fullmatch(digest):
                raise ValueError(f"dataset {self.name!r}: download URL {url} for {file_name!r} needs a sha256 "
                                 f"(64 lowercase hex digits) in sha256={{...}}, got {digest!r}")
        if self.hf_revision is not None and not _COMMIT.fullmatch(self.hf_revision):
            raise ValueError(f"dataset {self.name!r}: hf_revision must be a full 40-character commit sha, not a "
                             f"branch or tag, got {self.hf_revision!r}")

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self.splits)

    @property
    def is_seq2seq(self) -> bool:
        return self.target_column is not None

    def file_for(self, split: str) -> str:
        """File name (in the dataset folder) holding ``split``; ValueError listing the splits if absent."""
        if split not in self.splits:
            raise ValueError(
                f"dataset {self.name!r} has no split {split!r}; it has: {', '.join(self.splits)}"
            )
        return self.splits[split]


# the commit the shared data folder's copy was taken from (its README); same bytes as the old master link
_TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
    "data/tinyshakespeare/input.txt"
)
# pytorch/examples ships the WikiText-2 v1 token files byte-identically (the original Salesforce zip is gone)
_WIKITEXT2_URL = (
    "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/"
    "word_language_model/data/wikitext-2/{}.txt"
)

def _pretraining_text(name: str, description: str, license: str) -> DatasetSpec:
    """A pretraining-only corpus of the data folder: one ``train.parquet`` with a ``text`` column."""
    return DatasetSpec(name=name, description=description, splits={"train": "train.parquet"}, text_column="text",
                       license=license, general_text=True, pretrain_splits=("train",))


_SPECS: list[DatasetSpec] = [
    DatasetSpec(
        name="tinyshakespeare",
        description="~1.1 MB of Shakespeare plays (char-rnn input.txt); nanoGPT 90/10 character split.",
        splits={"train": "input.txt", "validation": "input.txt"},
        text_column="text",
        urls={"input.txt": _TINYSHAKESPEARE_URL},
        sha256={"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
        license="public domain (char-rnn: MIT)",
        general_text=True,
        pretrain_splits=("train",),
        derived_splits={"train": (0.0, 0.9), "validation": (0.9, 1.0)},
    ),
    DatasetSpec(
        name="wikipedia_en",
        description=(
            "English Wikipedia plain text (WikiExtractor, 2015 dump subset): 3,643 train / 95 val articles."
        ),
        splits={"train": "train.parquet", "validation": "validation.parquet"},
        text_column="text",
        license="CC BY-SA 3.0 / GFDL",
        general_text=True,
        pretrain_splits=("train",),
    ),
    DatasetSpec(
        name="wikipedia_zh",
        description=(
            "Chinese Wikipedia plain text (2023 dump subset, Simplified via OpenCC): 26,385 "
            "train / 1,209 val."
        ),
        splits={"train": "train.parquet", "validation": "validation.parquet"},
        text_column="text",
        license="CC BY-SA 4.0 / GFDL",
        general_text=True,
        pretrain_splits=("train",),
    ),
    # Book, textbook and documentation corpora added for the bilingual base model. Each has one
    # ``train`` file (one document per row); prepare holds out a seeded fraction of whole documents.
    # They are processed copies of GitHub repositories (see the data folder's README), so there is no
    # upstream file to download: they must be in the data directory.
    _pretraining_text(
        "gutenberg_en",
        "377 English Project Gutenberg books (headers stripped; hard-wrapped lines), 105.5M chars.",
        "public domain (US)",
    ),
    _pretraining_text(
        "openstax_ccby_en",
        "OpenStax textbooks (anthropology, US and world history), 778 sections, 9.1M chars.",
        "CC BY 4.0 (OpenStax, Rice University)",
    ),
    _pretraining_text(
        "shu_books_zh",
        "321 public-domain Chinese books (modern prose, Ming/Qing vernacular novels), 44.2M chars.",
        "public domain (PRC law); repository MIT",
    ),
    _pretraining_text(
        "lctt_zh",
        "Linux.cn (LCTT) translated technical articles, 7,964 articles, 17.0M chars.",
        "Apache-2.0 (originals mostly CC BY-SA)",
    ),
    _pretraining_text(
        "lawrefbook_zh",
        "PRC laws and regulations (official text), 3,412 documents, 19.5M chars.",
        "official texts, outside copyright (PRC Copyright Law art. 5)",
    ),
    _pretraining_text(
        "tidb_docs_zh",
        "TiDB documentation in Chinese, 1,083 pages, 3.3M chars.",
        "CC BY-SA 3.0 (PingCAP and the docs-cn contributors)",
    ),
    DatasetSpec(
        name="wikitext2",
        description="WikiText-2 v1 (tokenized, <unk>), validation/test only; one row per article. LM eval.",
        splits={"validation": "wiki.valid.tokens", "test": "wiki.test.tokens"},
        text_column="text",
        hf_id="Salesforce/wikitext",
        hf_config="wikitext-2-v1",
        hf_revision="b08601e04326c79dfdd32d625aee71d232d685c3",
        urls={
            "wiki.valid.tokens": _WIKITEXT2_URL.format("valid"),
            "wiki.test.tokens": _WIKITEXT2_URL.format("test"),
        },
        sha256={
            "wiki.valid.tokens": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "wiki.test.tokens": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        },
        license="CC BY-SA 3.0 / GFDL",
        folder="wikitext",
    ),
    DatasetSpec(
        name="imdb",
        description=(
            "IMDb movie reviews (Maas et al. 2011): sentiment + 50k unlabeled; raw text keeps <br /> tags."
        ),
        splits={"train": "train.parquet", "test": "test.parquet", "unsupervised": "unsupervised.parquet"},
        text_column="text",
        label_column="label",
        label_names=("neg", "pos"),
        hf_id="stanfordnlp/imdb",
        hf_revision="e6281661ce1c48d982bc483cf8a173c1bbeb5d31",
        license="research use (no formal licence)",
        general_text=True,
        pretrain_splits=("train", "unsupervised"),
    ),
    DatasetSpec(
        name="sms_spam",
        description="UCI SMS Spam Collection v.1: 5,574 English SMS, ham/spam; single train split.",
        splits={"train": "train.parquet"},
        text_column="sms",
        label_column="label",
        label_names=("ham", "spam"),
        hf_id="ucirvine/sms_spam",
        hf_revision=None,  # commit not looked up yet: no hub fallback (see the module docstring)
        license="CC BY 4.0",
    ),
    DatasetSpec(
        name="tatoeba_cmn_eng",
        description=(
            "Tatoeba English-Mandarin sentence pairs (ManyThings cmn.txt): 29,155 pairs; train split only."
        ),
        splits={"train": "train.parquet"},
        text_column="en",
        target_column="zh",
        license="CC-BY 2.0 FR (keep the attribution column)",
    ),
    DatasetSpec(
        name="chnsenticorp",
        description="ChnSentiCorp Chinese review sentiment; test is unlabeled (label -1), evaluate on validation.",
        splits={"train": "train.parquet", "validation": "validation.parquet", "test": "test.parquet"},
        text_column="text",
        label_column="label",
        label_names=("negative", "positive"),
        hf_id="seamew/ChnSentiCorp",
        hf_revision=None,  # commit not looked up yet: no hub fallback
        license="non-commercial research/teaching (Baidu LUGE agreement)",
    ),
    DatasetSpec(
        name="aeslc",
        description="AESLC: Enron e-mail body -> subject line summarization (14,436 / 1,960 / 1,906).",
        splits={"train": "train.parquet", "validation": "validation.parquet", "test": "test.parquet"},
        text_column="email_body",
        target_column="subject_line",
        hf_id="Yale-LILY/aeslc",
        hf_revision=None,  # commit not looked up yet: no hub fallback
        license="CC BY-NC-SA 4.0",
    ),
    DatasetSpec(
        name="csl_ts",
        description=(
            "CSL Chinese scientific abstract -> title summarization; validation/test (1,000 each) only."
        ),
        splits={"validation": "validation.parquet", "test": "test.parquet"},
        text_column="document",
        target_column="summary",
        license="Apache-2.0",
    ),
    DatasetSpec(
        name="ag_news",
        description="AG News 4-class topic classification; test split (7,600) only; text has ' #39;' quirks.",
        splits={"test": "test.parquet"},
        text_column="text",
        label_column="label",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        hf_id="fancyzhx/ag_news",
        hf_revision="eb185aade064a813bc0b7f42de02595523103ca4",
        license="non-commercial research/education",
    ),
]

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; UnknownDatasetError lists the known names (and a close match)."""
    try:
        return DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownDatasetError(
            f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(sorted(DATASETS))}. "
            "For your own data pass a path to a .txt/.jsonl/.csv/.parquet file or a folder of them."
        ) from None
