"""Extract or abstract: per source, a logistic switch between the decoder's summary and the source's first
sentence (the extractive lead).

Why: on AESLC the lead sentence and the decoder's short subject win on different e-mails (choosing the better
of the two per e-mail, an oracle, scores ~9 ROUGE-1 above either). Surface features tell part of it (a short,
self-contained first sentence is a subject already; a long one or a greeting is not), and the decoder tells
the rest: how plausible the lead is, as this e-mail's subject, against its own summary. The switch is fitted on
held-out sources with their references (:func:`fit`), saved in the model's ``config.json`` (``lead_switch``)
and applied by ``Seq2SeqModel.generate`` (:func:`choose`); applying it costs two decoder loss passes per
source (the lead and the summary as targets) and a dot product.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from ..baselines.lead import lead

FEATURES = ("log_lead_words", "summary_words", "summary_in_lead", "lead_is_question", "log_sentences",
            "log_source_chars", "lead_at_most_15_words", "lead_loss", "summary_loss", "lead_minus_summary_loss")
_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
# (sources, targets) -> mean next-token loss of each target given its source (Seq2SeqModel.target_loss)
LossFn = Callable[[list[str], list[str]], np.ndarray]


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def surface_features(source: str, summary: str) -> list[float]:
    """The first seven of ``FEATURES``: lengths and overlaps, no model needed."""
    first = lead(source)
    n_lead = len(first.split())
    said = _words(summary)
    sentences = [s for s in _SENTENCE.split(source.strip()) if s.strip()]
    return [math.log1p(n_lead), float(len(summary.split())), len(said & _words(first)) / max(1, len(said)),
            float(first.rstrip().endswith(("?", "？"))), math.log1p(len(sentences)), math.log1p(len(source)),
            float(n_lead <= 15)]


def feature_matrix(sources: Sequence[str], summaries: Sequence[str], loss: LossFn) -> np.ndarray:
    """(n, len(FEATURES)): surface features, then the decoder's loss on the lead and on its own summary."""
    sources, summaries = list(sources), list(summaries)
    lead_loss = np.asarray(loss(sources, [lead(s) or "-" for s in sources]), dtype=np.float64)
    summary_loss = np.asarray(loss(sources, [h or "-" for h in summaries]), dtype=np.float64)
    surface = np.array([surface_features(s, h) for s, h in zip(sources, summaries)], dtype=np.float64)
    return np.c_[surface.reshape(-1, 7), lead_loss, summary_loss, lead_loss - summary_loss]


def lead_probability(switch: dict, x: np.ndarray) -> np.ndarray:
    """P(the lead scores higher than the summary) for each row of a feature matrix, under a fitted switch."""
    if list(switch.get("features", [])) != list(FEATURES):
        raise ValueError(f"lead_switch was fitted on features {switch.get('features')}; this version computes "
                         f"{list(FEATURES)}: refit it")
    z = (x - np.asarray(switch["mean"])) / np.asarray(switch["scale"])
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(switch["coef"]) + switch["intercept"])))


def choose(switch: dict, sources: Sequence[str], summaries: Sequence[str], loss: LossFn) -> list[str]:
    """The lead sentence where the switch prefers it, else the decoder's summary (an empty source keeps its
    empty summary)."""
    keep = [i for i, s in enumerate(sources) if lead(s)]
    out = list(summaries)
    if not keep:
        return out
    p = lead_probability(switch, feature_matrix([sources[i] for i in keep], [summaries[i] for i in keep], loss))
    for i, q in zip(keep, p):
        if q > switch["threshold"]:
            out[i] = lead(sources[i])
    return out


def fit(sources: Sequence[str], summaries: Sequence[str], references: Sequence[Sequence[str]],
        score: Callable[[str, Sequence[str]], float], loss: LossFn, *, c: float = 0.1, folds: int = 5,
        seed: int = 0) -> dict:
    """Fit the switch on held-out sources: the label is whether the lead's score against the references beats
    the summary's (``score(hyp, refs)``, e.g. mean ROUGE over references). Returns the switch as saved in
    ``config.json``, with the share of sources a ``folds``-fold cross-fitted switch sends to the lead and the
    score of the cross-fitted choice beside the summary's and the lead's (an honest estimate: each fold is
    chosen by a switch that did not see it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    sources, summaries, references = list(sources), list(summaries), list(references)
    if not (len(sources) == len(summaries) == len(references)):
        raise ValueError(f"fit: {len(sources)} sources, {len(summaries)} summaries, {len(references)} reference lists")
    x = feature_matrix(sources, summaries, loss)
    s_lead = np.array([score(lead(s), r) for s, r in zip(sources, references)])
    s_summary = np.array([score(h, r) for h, r in zip(summaries, references)])
    y = (s_lead > s_summary).astype(int)
    if y.min() == y.max() or min(y.sum(), len(y) - y.sum()) < folds:
        raise ValueError(f"fit: the lead wins on {y.sum()} of {len(y)} sources; a switch needs both outcomes "
                         f"at least {folds} times")

    def model(rows):
        scaler = StandardScaler().fit(x[rows])
        return scaler, LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x[rows]), y[rows])

    chosen = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        scaler, lr = model(train)
        chosen[test] = lr.predict_proba(scaler.transform(x[test]))[:, 1] > 0.5
    scaler, lr = model(np.arange(len(y)))
    return {"features": list(FEATURES), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]), "threshold": 0.5, "c": c,
            "fitted_on": len(y), "lead_wins": float(y.mean()),
            "cross_fitted": {"folds": folds, "lead_chosen": float(chosen.mean()),
                             "score": float(np.where(chosen, s_lead, s_summary).mean()),
                             "summary_score": float(s_summary.mean()), "lead_score": float(s_lead.mean())}}
