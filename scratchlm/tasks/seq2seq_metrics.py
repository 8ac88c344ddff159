"""Corpus-level BLEU / chrF (sacrebleu) and ROUGE (rouge-score) for translation and summarization.

Every function takes the hypotheses (one string per example) and ``refs_list``: one list of reference
strings per example (``[[ref]]`` for a single reference, AESLC's three subjects as ``[[a, b, c], ...]``).
Examples may have different numbers of references. Every value returned is a plain Python number, string,
list or dict, so results go straight into JSON.

* :func:`bleu` -- sacrebleu ``BLEU(tokenize="zh")`` for Chinese targets, ``"13a"`` otherwise; the
  references are transposed into sacrebleu's streams (padded with None where an example has fewer).
* :func:`chrf` -- sacrebleu ``CHRF()`` (character 6-grams, beta 2), language independent.
* :func:`rouge` -- ROUGE-1/2/L F1 x 100. English: ``RougeScorer(use_stemmer=True)`` with its default
  tokenizer. Chinese: the default tokenizer keeps only ``[a-z0-9]`` and would score every Chinese pair 0,
  so both sides are split into characters and scored with :class:`CharTokenizer`, which keeps every
  letter or digit of any script (CJK ideographs included) and drops punctuation and spaces. Several
  references: the best F per example and ROUGE type (``score_multi``), then the mean over examples; the
  mean F over an example's references (ROUGE-1.5.5's default ``-f A`` averaging) is reported beside it as
  ``rouge*_mean_refs``, since papers differ in which they use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check(hyps: Sequence[str], refs_list: Sequence[Sequence[str]], what: str) -> tuple[list[str], list[list[str]]]:
    """Hypotheses and references as lists, after checking shapes and types (ValueError naming the example)."""
    if isinstance(hyps, str) or isinstance(refs_list, str):
        raise ValueError(f"{what}: hyps and refs_list must be lists (one entry per example), not a string")
    hyps, refs_list = list(hyps), list(refs_list)
    if not hyps:
        raise ValueError(f"{what}: no hypotheses (empty input)")
    if len(hyps) != len(refs_list):
        raise ValueError(f"{what}: {len(hyps)} hypotheses but {len(refs_list)} reference lists; refs_list needs "
                         "one list of references per hypothesis")
    out_refs = []
    for i, (h, refs) in enumerate(zip(hyps, refs_list)):
        if not isinstance(h, str):
            raise ValueError(f"{what}: hypothesis {i} is {type(h).__name__}, not a string")
        if isinstance(refs, str):
            raise ValueError(f"{what}: references of example {i} are a string; wrap it in a list: [{refs[:40]!r}]")
        refs = list(refs)
        if not refs:
            raise ValueError(f"{what}: example {i} has no references")
        if not all(isinstance(r, str) for r in refs):
            raise ValueError(f"{what}: references of example {i} must be strings, got {refs!r}")
        out_refs.append(refs)
    return hyps, out_refs


def transpose_refs(refs_list: list[list[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacrebleu reference streams (stream k = every example's k-th
    reference, None where an example has fewer; sacrebleu skips the Nones)."""
    n = max(len(r) for r in refs_list)
    return [[refs[k] if k < len(refs) else None for refs in refs_list] for k in range(n)]


def bleu(hyps: Sequence[str], refs_list: Sequence[Sequence[str]], tgt_lang: str = "en") -> dict:
    """Corpus BLEU: ``score``, ``signature`` (``tok:zh`` for Chinese) and the sub-scores (n-gram
    precisions, brevity penalty, length ratio, hypothesis/reference lengths, counts/totals)."""
    from sacrebleu.metrics import BLEU

    hyps, refs = _check(hyps, refs_list, "bleu")
    metric = BLEU(tokenize="zh" if tgt_lang == "zh" else "13a")
    s = metric.corpus_score(hyps, transpose_refs(refs))
    return {
        "score": float(s.score),
        "signature": str(metric.get_signature()),
        "precisions": [float(p) for p in s.precisions],
        "bp": float(s.bp),
        "ratio": float(s.ratio),
        "sys_len": int(s.sys_len),
        "ref_len": int(s.ref_len),
        "counts": [int(c) for c in s.counts],
        "totals": [int(t) for t in s.totals],
        "n": len(hyps),
    }


def chrf(hyps: Sequence[str], refs_list: Sequence[Sequence[str]], tgt_lang: str = "en") -> dict:
    """Corpus chrF (sacrebleu ``CHRF()``): ``score``, ``signature`` and its settings (character/word
    n-gram orders, beta). ``tgt_lang`` is accepted for symmetry with :func:`bleu`; chrF ignores it."""
    from sacrebleu.metrics import CHRF

    hyps, refs = _check(hyps, refs_list, "chrf")
    metric = CHRF()
    s = metric.corpus_score(hyps, transpose_refs(refs))
    return {
        "score": float(s.score),
        "signature": str(metric.get_signature()),
        "char_order": int(s.char_order),
        "word_order": int(s.word_order),
        "beta": int(s.beta),
        "n": len(hyps),
    }


class CharTokenizer:
    """rouge-score tokenizer for Chinese: one token per letter or digit of any script (CJK ideographs,
    Latin letters, digits), lower-cased; punctuation and whitespace dropped. No stemming."""

    def tokenize(self, text: str) -> list[str]:
        return [ch.lower() for ch in text if ch.isalnum()]


def char_spaced(text: str) -> str:
    """The characters of ``text`` separated by single spaces (whitespace dropped): '我 爱 你'."""
    return " ".join(ch for ch in text if not ch.isspace())


def rouge_scorer_for(lang: str):
    """The RougeScorer used for ``lang``: stemmed default tokenizer for English, characters for Chinese."""
    from rouge_score import rouge_scorer

    if lang == "zh":
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CharTokenizer())
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(hyps: Sequence[str], refs_list: Sequence[Sequence[str]], lang: str = "en") -> dict:
    """Mean ROUGE-1/2/L F1 x 100 (``rouge1``, ``rouge2``, ``rougeL``); with several references the best
    F per example and type counts. Also ``rouge*_precision`` / ``rouge*_recall`` (means of the
    precision/recall of the chosen reference), ``rouge*_mean_refs`` (the F averaged over each example's
    references, then over examples; equal to ``rouge*`` with one reference), ``tokenizer`` and ``n``."""
    hyps, refs = _check(hyps, refs_list, "rouge")
    scorer = rouge_scorer_for(lang)
    if lang == "zh":
        hyps = [char_spaced(h) for h in hyps]
        refs = [[char_spaced(r) for r in rs] for rs in refs]
    per_type: dict[str, list] = {t: [] for t in ROUGE_TYPES}
    mean_refs: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for h, rs in zip(hyps, refs):
        each = [scorer.score(r, h) for r in rs]
        for t in ROUGE_TYPES:
            per_type[t].append(max((sc[t] for sc in each), key=lambda x: x.fmeasure))  # = score_multi
            mean_refs[t].append(float(np.mean([sc[t].fmeasure for sc in each])))
    out: dict = {}
    for t in ROUGE_TYPES:
        out[t] = float(np.mean([s.fmeasure for s in per_type[t]]) * 100)
    for t in ROUGE_TYPES:
        out[f"{t}_precision"] = float(np.mean([s.precision for s in per_type[t]]) * 100)
        out[f"{t}_recall"] = float(np.mean([s.recall for s in per_type[t]]) * 100)
    for t in ROUGE_TYPES:
        out[f"{t}_mean_refs"] = float(np.mean(mean_refs[t]) * 100)
    out["tokenizer"] = "chars (CJK kept)" if lang == "zh" else "rouge-score default + Porter stemmer"
    out["n"] = len(hyps)
    return out


def rouge_mean_refs_score(lang: str = "en"):
    """``score(hyp, refs)``: ROUGE-1/2/L F1 each averaged over the references, then over the three (0-1): one
    example's number, for choosing between outputs (the lead switch's label)."""
    scorer = rouge_scorer_for(lang)

    def score(hyp: str, refs: Sequence[str]) -> float:
        if lang == "zh":
            hyp, refs = char_spaced(hyp), [char_spaced(r) for r in refs]
        each = [scorer.score(r, hyp) for r in refs]
        return float(np.mean([np.mean([sc[t].fmeasure for sc in each]) for t in ROUGE_TYPES]))

    return score


def output_diversity(hyps: Sequence[str]) -> dict:
    """How much the outputs collapse onto a few frequent lines (a summarizer writing the same training subject
    for every e-mail scores a few ROUGE points and says nothing): the number of distinct outputs and the most
    frequent one with its count."""
    from collections import Counter

    if not hyps:
        return {"distinct_outputs": 0, "most_frequent_output": "", "most_frequent_count": 0}
    text, count = Counter(hyps).most_common(1)[0]
    return {"distinct_outputs": len(set(hyps)), "most_frequent_output": text, "most_frequent_count": count}
