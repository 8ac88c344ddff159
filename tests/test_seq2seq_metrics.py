"""BLEU / chrF / ROUGE wrappers: equal to direct sacrebleu / rouge-score calls, multi-reference, Chinese."""

from __future__ import annotations

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("rouge_score")

from rouge_score import rouge_scorer  # noqa: E402
from sacrebleu.metrics import BLEU, CHRF  # noqa: E402

from scratchlm.tasks.seq2seq_metrics import (  # noqa: E402
    CharTokenizer,
    bleu,
    char_spaced,
    chrf,
    rouge,
    transpose_refs,
)

EN_HYPS = ["The cat is on the mat.", "I don't like running in the rain.", "We went home early."]
EN_REFS = [["The cat sat on the mat."], ["I do not like to run in the rain."], ["We went home early."]]
ZH_HYPS = ["我喜欢猫。", "今天天气很好。", "他昨天去了北京。"]
ZH_REFS = [["我很喜欢猫。"], ["今天的天气很好。"], ["他昨天去北京了。"]]
# AESLC-style: three references per example, and a variable number
MULTI_HYPS = ["meeting confirmation", "draw file for bishops corner"]
MULTI_REFS = [["meeting confimation - tues, 8/10", "meeting confirmation", "meeting confirmed"],
              ["draw file bishops corneer", "draw file for bishops corner", "draw file you created for bishops corner"]]


def test_bleu_equals_sacrebleu_en():
    out = bleu(EN_HYPS, EN_REFS, "en")
    direct = BLEU(tokenize="13a")
    ref = direct.corpus_score(EN_HYPS, [[r[0] for r in EN_REFS]])
    assert out["score"] == pytest.approx(ref.score)
    assert out["precisions"] == pytest.approx(ref.precisions)
    assert out["bp"] == pytest.approx(ref.bp) and out["sys_len"] == ref.sys_len and out["ref_len"] == ref.ref_len
    assert out["signature"] == str(direct.get_signature()) and "tok:13a" in out["signature"]
    assert "nrefs:1" in out["signature"]


def test_bleu_zh_tokenizer_and_signature():
    out = bleu(ZH_HYPS, ZH_REFS, "zh")
    direct = BLEU(tokenize="zh")
    assert out["score"] == pytest.approx(direct.corpus_score(ZH_HYPS, [[r[0] for r in ZH_REFS]]).score)
    assert "tok:zh" in out["signature"]
    # without zh tokenization a whole unsegmented Chinese sentence is one "word": far lower BLEU
    assert out["score"] > bleu(ZH_HYPS, ZH_REFS, "en")["score"]
    assert bleu(["我喜欢猫。"], [["我喜欢猫。"]], "zh")["score"] == pytest.approx(100.0)


def test_chrf_equals_sacrebleu():
    for hyps, refs in ((EN_HYPS, EN_REFS), (ZH_HYPS, ZH_REFS)):
        out = chrf(hyps, refs)
        direct = CHRF()
        assert out["score"] == pytest.approx(direct.corpus_score(hyps, [[r[0] for r in refs]]).score)
        assert out["signature"] == str(direct.get_signature())
        assert out["char_order"] == 6 and out["beta"] == 2


def test_multi_reference_bleu_chrf():
    assert transpose_refs([["a", "b"], ["c"]]) == [["a", "c"], ["b", None]]
    streams = [list(s) for s in zip(*MULTI_REFS)]
    assert bleu(MULTI_HYPS, MULTI_REFS)["score"] == pytest.approx(BLEU().corpus_score(MULTI_HYPS, streams).score)
    assert chrf(MULTI_HYPS, MULTI_REFS)["score"] == pytest.approx(CHRF().corpus_score(MULTI_HYPS, streams).score)
    assert "nrefs:3" in bleu(MULTI_HYPS, MULTI_REFS)["signature"]
    # more references can only help: each hypothesis matches one of them exactly
    assert bleu(MULTI_HYPS, MULTI_REFS)["score"] > bleu(MULTI_HYPS, [[r[0]] for r in MULTI_REFS])["score"]
    # a variable number of references per example
    var = bleu(MULTI_HYPS, [MULTI_REFS[0], MULTI_REFS[1][:1]])
    assert "nrefs:var" in var["signature"]


def test_rouge_equals_rouge_score_en():
    out = rouge(EN_HYPS, EN_REFS, "en")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per = [scorer.score(r[0], h) for h, r in zip(EN_HYPS, EN_REFS)]
    for t in ("rouge1", "rouge2", "rougeL"):
        assert out[t] == pytest.approx(100 * sum(s[t].fmeasure for s in per) / len(per))
    assert 0 < out["rouge2"] < out["rouge1"] <= 100


def test_rouge_multi_reference_takes_best_per_example():
    out = rouge(MULTI_HYPS, MULTI_REFS, "en")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        best = [max(scorer.score(r, h)[t].fmeasure for r in refs) for h, refs in zip(MULTI_HYPS, MULTI_REFS)]
        assert out[t] == pytest.approx(100 * sum(best) / len(best))
    assert out["rouge1"] == pytest.approx(100.0)  # each hypothesis equals one of its references
    assert rouge(MULTI_HYPS, [[r[0]] for r in MULTI_REFS])["rouge1"] < 100


def test_rouge_mean_over_references_beside_the_best():
    out = rouge(MULTI_HYPS, MULTI_REFS, "en")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        means = [sum(scorer.score(r, h)[t].fmeasure for r in refs) / len(refs)
                 for h, refs in zip(MULTI_HYPS, MULTI_REFS)]
        assert out[f"{t}_mean_refs"] == pytest.approx(100 * sum(means) / len(means))
        best = [scorer.score_multi(refs, h)[t].fmeasure for h, refs in zip(MULTI_HYPS, MULTI_REFS)]
        assert out[t] == pytest.approx(100 * sum(best) / len(best))  # the same choice as score_multi
    assert out["rouge1_mean_refs"] < out["rouge1"]
    single = rouge(EN_HYPS, EN_REFS, "en")  # one reference: both are the same number
    assert single["rouge1_mean_refs"] == pytest.approx(single["rouge1"])


def test_rouge_chinese_not_zero_for_identical_strings():
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    assert scorer.score("我喜欢猫。", "我喜欢猫。")["rouge1"].fmeasure == 0  # the pitfall: CJK dropped
    out = rouge(["我喜欢猫。"], [["我喜欢猫。"]], "zh")
    assert out["rouge1"] == pytest.approx(100) and out["rouge2"] == pytest.approx(100)
    assert out["rougeL"] == pytest.approx(100)


def test_rouge_zh_equals_direct_character_scoring():
    out = rouge(ZH_HYPS, ZH_REFS, "zh")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=CharTokenizer())
    per = [scorer.score(char_spaced(r[0]), char_spaced(h)) for h, r in zip(ZH_HYPS, ZH_REFS)]
    for t in ("rouge1", "rouge2", "rougeL"):
        assert out[t] == pytest.approx(100 * sum(s[t].fmeasure for s in per) / len(per))
    # by hand: "我喜欢猫" vs "我很喜欢猫" (punctuation dropped): 4 common chars, P 4/4, R 4/5
    one = rouge(ZH_HYPS[:1], ZH_REFS[:1], "zh")
    assert one["rouge1"] == pytest.approx(100 * 2 * 1.0 * 0.8 / 1.8)
    assert CharTokenizer().tokenize("我用 iPhone，好！") == ["我", "用", "i", "p", "h", "o", "n", "e", "好"]
    assert char_spaced("我 爱你") == "我 爱 你"


@pytest.mark.parametrize("fn", [bleu, chrf, rouge])
def test_bad_inputs(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        fn(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="example 0 has no references"):
        fn(["a"], [[]])
    with pytest.raises(ValueError, match="wrap it in a list"):
        fn(["a"], ["a"])
    with pytest.raises(ValueError, match="not a string"):
        fn("a", [["a"]])


def test_output_diversity_counts_the_collapse_onto_one_line():
    from scratchlm.tasks.seq2seq_metrics import output_diversity

    d = output_diversity(["California Update", "Meeting", "California Update", "Lunch"])
    assert d == {"distinct_outputs": 3, "most_frequent_output": "California Update", "most_frequent_count": 2}
    assert output_diversity([])["distinct_outputs"] == 0
