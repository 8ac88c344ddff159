"""Paired seq2seq data: tatoeba's seeded 2,000 / 1,000 split and leakage guard, AESLC's three test
references, and clear errors for bad local files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from scratchlm.data.labeled import text_key
from scratchlm.data.parallel import ParallelSplit, Seq2SeqDataConfig, load_parallel
from scratchlm.data.prepare import LeakageError
from scratchlm.data.sources import DataError


def _data_dir(folder: str) -> Path | None:
    root = os.environ.get("SCRATCHLM_DATA_DIR")  # set by tests/conftest.py for a checkout next to shared/
    if root and (Path(root) / folder).is_dir():
        return Path(root)
    return None


requires_tatoeba = pytest.mark.skipif(_data_dir("tatoeba_cmn_eng") is None,
                                      reason="SCRATCHLM_DATA_DIR does not hold tatoeba_cmn_eng")
requires_aeslc = pytest.mark.skipif(_data_dir("aeslc") is None, reason="SCRATCHLM_DATA_DIR does not hold aeslc")


@pytest.fixture(scope="module")
def tatoeba():
    if _data_dir("tatoeba_cmn_eng") is None:
        pytest.skip("SCRATCHLM_DATA_DIR does not hold tatoeba_cmn_eng")
    return load_parallel(Seq2SeqDataConfig("tatoeba_cmn_eng"))


@pytest.fixture(scope="module")
def aeslc():
    if _data_dir("aeslc") is None:
        pytest.skip("SCRATCHLM_DATA_DIR does not hold aeslc")
    return load_parallel(Seq2SeqDataConfig("aeslc"))


def _keys(split: ParallelSplit) -> tuple[set[str], set[str]]:
    return {text_key(s) for s in split.sources}, {text_key(t) for t in split.targets}


# ------------------------------------------------------------------------------------------------ tatoeba


@requires_tatoeba
def test_tatoeba_split_sizes_and_accounting(tatoeba):
    d = tatoeba
    assert (d.src_lang, d.tgt_lang, d.source_column, d.target_column) == ("en", "zh", "en", "zh")
    assert len(d.test) == 2000 and len(d.val) == 1000
    # every one of the 29,155 rows is in a split or counted as dropped/removed
    assert d.dropped["train"]["duplicate"] == 100  # the README's exact duplicates
    assert len(d.train) + len(d.val) + len(d.test) + d.dropped["train"]["duplicate"] + d.removed_overlap["train"] \
        == 29155
    assert d.removed_overlap["train"] > 0
    assert all(r == [t] for r, t in zip(d.test.references, d.test.targets))
    # the attribution (CC-BY) column travels with every pair
    raw = pd.read_parquet(_data_dir("tatoeba_cmn_eng") / "tatoeba_cmn_eng" / "train.parquet")
    by_attr = dict(zip(raw["attribution"], zip(raw["en"], raw["zh"])))
    for split in (d.train, d.val, d.test):
        assert len(split.extra["attribution"]) == len(split)
    for s, t, a in list(zip(d.test.sources, d.test.targets, d.test.extra["attribution"]))[:50]:
        assert by_attr[a] == (s, t)


@requires_tatoeba
def test_tatoeba_no_test_side_in_train_or_val(tatoeba):
    test_en, test_zh = _keys(tatoeba.test)
    for split in (tatoeba.train, tatoeba.val):
        en, zh = _keys(split)
        assert not en & test_en and not zh & test_zh


@requires_tatoeba
def test_tatoeba_as_pretraining_text_holds_no_test_sentence(tatoeba):
    """Pretraining on a paired dataset reads its training pairs through the recipes' split: the raw
    train.parquet would hand the carved test sentences to the language model."""
    from scratchlm.data.prepare import CorpusConfig, DataConfig, _split_docs

    cfg = DataConfig(corpora=[CorpusConfig("tatoeba_cmn_eng")])
    train, val = _split_docs(cfg, cfg.corpora[0])
    assert train == tatoeba.train.sources + tatoeba.train.targets
    assert val == tatoeba.val.sources + tatoeba.val.targets
    test_en, test_zh = _keys(tatoeba.test)
    assert not {text_key(t) for t in train + val} & (test_en | test_zh)
    zh_only, _ = _split_docs(cfg, CorpusConfig("tatoeba_cmn_eng", column="zh"))
    assert zh_only == tatoeba.train.targets
    with pytest.raises(LeakageError, match="training pairs only"):
        _split_docs(cfg, CorpusConfig("tatoeba_cmn_eng", split="validation"))
    with pytest.raises(ValueError, match="column must be"):
        _split_docs(cfg, CorpusConfig("tatoeba_cmn_eng", column="fr"))


@requires_tatoeba
def test_tatoeba_deterministic_and_seeded(tatoeba):
    again = load_parallel(Seq2SeqDataConfig("tatoeba_cmn_eng", src_lang="zh", tgt_lang="en"))
    # the same split, the other direction
    assert again.test.sources == tatoeba.test.targets and again.test.targets == tatoeba.test.sources
    assert again.val.targets == tatoeba.val.sources and again.train.targets == tatoeba.train.sources
    other = load_parallel(Seq2SeqDataConfig("tatoeba_cmn_eng", seed=1, max_train_examples=100))
    assert other.test.sources != tatoeba.test.sources and len(other.train) == 100
    with pytest.raises(DataError, match="src_lang/data.tgt_lang"):
        load_parallel(Seq2SeqDataConfig("tatoeba_cmn_eng", src_lang="en", tgt_lang="en"))


# ------------------------------------------------------------------------------------------------ AESLC


@requires_aeslc
def test_aeslc_three_references_per_test_email(aeslc):
    raw = pd.read_parquet(_data_dir("aeslc") / "aeslc" / "test.parquet")
    test = aeslc.test
    assert len(test) == len(raw) == 1906  # the official test file is used as is
    ann = ["subject_line_ann0", "subject_line_ann1", "subject_line_ann2"]
    assert all(len(r) == 3 for r in test.references)
    from scratchlm.data.clean import redact_pii  # personal data in the subjects became typed placeholders

    assert test.references == [[redact_pii(a.strip()) for a in row] for row in raw[ann].itertuples(index=False)]
    assert test.targets == [r[0] for r in test.references]
    assert test.extra["subject_line"] == [s.strip() for s in raw["subject_line"]]  # the original subject
    assert test.extra["file"] == raw["file"].tolist()
    # validation: target = the original subject (as in training), references = the three annotations
    assert all(len(r) == 3 for r in aeslc.val.references)
    assert all(len(r) == 1 for r in aeslc.train.references[:100])
    test_src, _ = _keys(test)
    for split in (aeslc.train, aeslc.val):
        assert not _keys(split)[0] & test_src  # summarization: the e-mail bodies are guarded
    assert (aeslc.src_lang, aeslc.tgt_lang) == ("en", "en") and not aeslc.is_translation


# ------------------------------------------------------------------------------------------------ local files


def _write_pair(tmp_path: Path, src: list[str], tgt: list[str]) -> tuple[Path, Path]:
    s, t = tmp_path / "src.txt", tmp_path / "tgt.txt"
    s.write_text("\n".join(src) + "\n", "utf-8")
    t.write_text("\n".join(tgt) + "\n", "utf-8")
    return s, t


def _txt_cfg(s: Path, t: Path, **kw) -> Seq2SeqDataConfig:
    return Seq2SeqDataConfig(src_file=str(s), tgt_file=str(t), src_lang="en", tgt_lang="zh",
                             **{"val_size": 3, "test_size": 4, **kw})


def test_txt_pair_carve_guard_and_drops(tmp_path, caplog):
    src = [f"sentence {i}" for i in range(30)] + ["", "sentence 3", "hello", "Sentence  3 "]
    tgt = [f"句子{i}" for i in range(30)] + ["空", "句子3", "", "句子3"]
    s, t = _write_pair(tmp_path, src, tgt)
    with caplog.at_level(logging.WARNING, logger="scratchlm.data.parallel"):
        d = load_parallel(_txt_cfg(s, t))
    assert "dropped 2 of 34 pairs with an empty source or target" in caplog.text
    counts = d.dropped["src.txt+tgt.txt"]
    assert counts["empty"] == 2 and counts["duplicate"] == 2  # "Sentence  3 " normalises to "sentence 3"
    assert len(d.test) == 4 and len(d.val) == 3
    assert len(d.train) + len(d.val) + len(d.test) + d.removed_overlap["src.txt+tgt.txt"] == 30
    assert d.train.extra["line"] and all(src[n - 1].strip() == x for n, x in zip(d.train.extra["line"],
                                                                                  d.train.sources))
    again = load_parallel(_txt_cfg(s, t))
    assert again.test.sources == d.test.sources and again.train.sources == d.train.sources


def test_txt_pair_guard_removes_either_side(tmp_path):
    # every source is distinct but the targets repeat: a test target may not appear in train/val
    src = [f"s{i}" for i in range(40)]
    tgt = [f"t{i % 10}" for i in range(40)]
    s, t = _write_pair(tmp_path, src, tgt)
    d = load_parallel(_txt_cfg(s, t, val_size=2, test_size=3))
    test_tgt = {text_key(x) for x in d.test.targets}
    assert not test_tgt & {text_key(x) for x in d.train.targets + d.val.targets}
    assert d.removed_overlap["src.txt+tgt.txt"] == 40 - 3 - len(d.train) - len(d.val) > 0
    # summarization-style (source only): repeated targets stay
    d2 = load_parallel(_txt_cfg(s, t, val_size=2, test_size=3, leakage_guard="source"))
    assert d2.removed_overlap["src.txt+tgt.txt"] == 0 and len(d2.train) == 35


def test_length_filters_spare_the_test_set(tmp_path):
    src = [("x" * (i % 7 + 1)) + f" {i}" for i in range(40)]
    tgt = [f"t{i}" for i in range(40)]
    s, t = _write_pair(tmp_path, src, tgt)
    d = load_parallel(_txt_cfg(s, t, max_source_chars=6, test_size=5))
    assert all(len(x) <= 6 for x in d.train.sources + d.val.sources)
    assert d.dropped["src.txt+tgt.txt"]["source_too_long"] > 0 and len(d.test) == 5
    assert "source_too_long" in d.summary()


def test_unpaired_files_report_both_counts(tmp_path):
    s, t = _write_pair(tmp_path, ["a", "b", "c"], ["一", "二"])
    with pytest.raises(DataError, match=r"src\.txt has 3 lines but .*tgt\.txt has 2"):
        load_parallel(_txt_cfg(s, t))


def test_invalid_utf8_names_file_and_offset(tmp_path):
    s, t = _write_pair(tmp_path, ["a", "b"], ["一", "二"])
    s.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"src\.txt: invalid UTF-8 at byte offset 6 \(line 2\)"):
        load_parallel(_txt_cfg(s, t))


def test_unicode_line_separator_does_not_split_a_line(tmp_path):
    s, t = _write_pair(tmp_path, [f"a\u2028{i}" for i in range(12)], [f"b{i}" for i in range(12)])
    d = load_parallel(_txt_cfg(s, t, val_size=1, test_size=1))
    assert len(d.train) + len(d.val) + len(d.test) == 12


def test_missing_columns_list_the_available_ones(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps({"en": f"e{i}", "de": f"d{i}"}) for i in range(10)) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"no source column 'source'; available columns: en, de"):
        load_parallel(Seq2SeqDataConfig(str(f)))
    # naming the columns works
    d = load_parallel(Seq2SeqDataConfig(str(f), source_column="en", target_column="de", val_size=2, test_size=2))
    assert len(d.train) == 6 and d.train.sources[0].startswith("e")
    g = tmp_path / "refs.jsonl"
    g.write_text("\n".join(json.dumps({"source": f"e{i}", "target": f"d{i}", "r1": "x"}) for i in range(10)), "utf-8")
    with pytest.raises(DataError, match=r"reference columns r2 missing \(found r1\)"):
        load_parallel(Seq2SeqDataConfig(str(g), reference_columns=["r1", "r2"], val_size=2, test_size=2))


def test_non_string_cell_names_the_row(tmp_path):
    f = tmp_path / "pairs.jsonl"
    rows = [{"source": f"s{i}", "target": f"t{i}"} for i in range(10)]
    rows[4]["target"] = 5
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"row 4 \(.*pairs\.jsonl\), column 'target': expected a string, got int"):
        load_parallel(Seq2SeqDataConfig(str(f)))


def test_folder_with_test_file_and_references(tmp_path):
    train = [{"source": f"doc {i}", "target": f"sum {i}"} for i in range(20)]
    train.append({"source": "test doc 1", "target": "anything"})  # also a test source: removed
    test = [{"source": f"test doc {i}", "target": f"orig {i}", "r1": f"a{i}", "r2": "" if i else "b"}
            for i in range(3)]
    for name, rows in (("train", train), ("test", test)):
        pd.DataFrame(rows).to_parquet(tmp_path / f"{name}.parquet")
    d = load_parallel(Seq2SeqDataConfig(str(tmp_path), reference_columns=["r1", "r2"], val_size=5))
    assert d.test.name.endswith(":test") and len(d.test) == 3
    assert d.test.references == [["a0", "b"], ["a1"], ["a2"]]  # empty references are skipped
    assert d.test.targets == ["a0", "a1", "a2"] and d.test.extra["target"] == ["orig 0", "orig 1", "orig 2"]
    assert d.removed_overlap == {"train": 1} and len(d.train) == 15 and len(d.val) == 5


def test_references_as_targets_splits_emails_before_expanding(tmp_path):
    # a split with three references per document trains on each reference as a pair of its own; the
    # validation documents are carved before the expansion, so no document is on both sides
    rows = [{"source": f"doc {i}", "target": f"orig {i}", "r0": f"a{i}", "r1": f"b{i}", "r2": "" if i % 2 else f"c{i}"}
            for i in range(12)]
    pd.DataFrame(rows).to_parquet(tmp_path / "validation.parquet")
    pd.DataFrame(rows[:2]).to_parquet(tmp_path / "test.parquet")
    d = load_parallel(Seq2SeqDataConfig(str(tmp_path), train_split="validation", val_size=4,
                                        reference_columns=["r0", "r1", "r2"], references_as_targets=True))
    assert len(d.test) == 2 and len(d.val) == 4
    assert not {s for s in d.train.sources} & {s for s in d.val.sources}
    assert not {s for s in d.train.sources} & {"doc 0", "doc 1"}  # the test e-mails stay out
    per_doc = {s: d.train.targets[i:] for i, s in enumerate(d.train.sources)}
    assert len(d.train) == sum(3 if int(s.split()[1]) % 2 == 0 else 2 for s in per_doc)
    assert all(t[0] in "abc" for t in d.train.targets)  # annotations, never the original subject
    assert d.train.references == [[t] for t in d.train.targets]
    assert d.val.targets == [r[0] for r in d.val.references] and all(t.startswith("a") for t in d.val.targets)
    assert d.train.name.endswith("[references]")


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        load_parallel(Seq2SeqDataConfig(src_file="a.txt"))
    with pytest.raises(ValueError, match="dataset is empty"):
        load_parallel(Seq2SeqDataConfig())
    with pytest.raises(ValueError, match="src_lang must be one of"):
        Seq2SeqDataConfig("x", src_lang="fr").validate()
    with pytest.raises(LeakageError):
        Seq2SeqDataConfig("aeslc", test_split="train").validate()
    s, t = _write_pair(tmp_path, ["a", "b", "c"], ["一", "二", "三"])
    with pytest.raises(DataError, match="too few to carve a test set"):
        load_parallel(_txt_cfg(s, t))


@requires_aeslc
def test_aeslc_personal_data_is_redacted_and_counted(aeslc):
    """AESLC e-mails carry phone numbers and addresses: sources, targets and references get <phone>, <email>..."""
    from scratchlm.data.clean import find_pii

    assert sum(aeslc.redactions.values()) > 0 and "personal data redacted" in aeslc.summary()
    for split in (aeslc.train, aeslc.val, aeslc.test):
        for text in [*split.sources[:300], *split.targets[:300]]:
            assert not find_pii(text)
    assert any("<phone>" in r for refs in aeslc.test.references for r in refs)
    raw = load_parallel(Seq2SeqDataConfig("aeslc", redact_pii=False, max_train_examples=50))
    assert raw.redactions == {} and len(raw.test) == len(aeslc.test)
    assert any(find_pii(t) for t in raw.test.sources)
