"""Extract or abstract: per source, a logistic switch between the decoder's summary and the source's first
sentence (the extractive lead).

Why: on AESLC the lead sentence and the decoder's short subject win on different e-mails (choosing the better
of the two per e-mail, an oracle, scores ~9 ROUGE-1 above either), and cheap surface features tell them
apart: a short, self-contained first sentence ("Could you please do me a favor?") is a subject already, a long
one or a greeting is not. The switch is fitted on held-out validation sources with their references
(:func:`fit`), saved in the model's ``config.json`` (``lead_switch``) and applied by ``generate``
(:func:`choose`); inference needs numpy only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..baselines.lead import lead

FEATURES = ("log_lead_words", "summary_words", "summary_in_lead", "lead_is_question", "log_sentences",
            "log_source_chars", "lead_at_most_15_words")
_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def features(source: str, summary: str) -> list[float]:
    """The switch's inputs for one source and the decoder's summary of it (names in ``FEATURES``)."""
    first = lead(source)
    n_lead = len(first.split())
    said = _words(summary)
    sentences = [s for s in _SENTENCE.split(source.strip()) if s.strip()]
    return [math.log1p(n_lead), float(len(summary.split())), len(said & _words(first)) / max(1, len(said)),
            float(first.rstrip().endswith(("?", "？"))), math.log1p(len(sentences)), math.log1p(len(source)),
            float(n_lead <= 15)]


def lead_probability(switch: dict, sources: Sequence[str], summaries: Sequence[str]) -> np.ndarray:
    """P(the lead scores higher than the summary) for each source, under a fitted switch."""
    if list(switch.get("features", [])) != list(FEATURES):
        raise ValueError(f"lead_switch was fitted on features {switch.get('features')}; this version computes "
                         f"{list(FEATURES)}: refit it")
    x = np.array([features(s, h) for s, h in zip(sources, summaries)], dtype=np.float64).reshape(-1, len(FEATURES))
    z = (x - np.asarray(switch["mean"])) / np.asarray(switch["scale"])
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(switch["coef"]) + switch["intercept"])))


def choose(switch: dict, sources: Sequence[str], summaries: Sequence[str]) -> list[str]:
    """The lead sentence where the switch prefers it, else the decoder's summary."""
    p = lead_probability(switch, sources, summaries)
    return [lead(s) if q > switch["threshold"] else h for s, h, q in zip(sources, summaries, p)]


def fit(sources: Sequence[str], summaries: Sequence[str], references: Sequence[Sequence[str]], score,
        *, c: float = 0.1, folds: int = 5, seed: int = 0) -> dict:
    """Fit the switch on held-out sources: the label is whether the lead's mean ROUGE over the references
    beats the summary's (``score(hyp, refs) -> float``). Returns the switch as saved in ``config.json``, with
    its ``folds``-fold cross-validated choice rate (the rows it would pick the lead for)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.preprocessing import StandardScaler

    if not (len(sources) == len(summaries) == len(references)):
        raise ValueError(f"fit: {len(sources)} sources, {len(summaries)} summaries, {len(references)} reference lists")
    x = np.array([features(s, h) for s, h in zip(sources, summaries)], dtype=np.float64)
    y = np.array([score(lead(s), r) > score(h, r) for s, h, r in zip(sources, summaries, references)], dtype=int)
    if y.min() == y.max():
        raise ValueError("fit: the lead wins on every source or on none; a switch has nothing to learn")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    model = LogisticRegression(C=c, max_iter=1000)
    cv = cross_val_predict(model, z, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                           method="predict_proba")[:, 1]
    model.fit(z, y)
    return {"features": list(FEATURES), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]), "threshold": 0.5, "c": c,
            "fitted_on": len(y), "lead_wins": float(y.mean()), "cv_lead_chosen": float((cv > 0.5).mean()),
            "cv_folds": folds}
