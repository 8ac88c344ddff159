"""The extract-or-abstract switch: fitted on held-out sources, it sends a source to its lead sentence where
the lead scores higher, and the decoder's summary elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from scratchlm.baselines.lead import lead
from scratchlm.infer import lead_switch


def _data(n=80):
    # short first sentences are the subjects (the references repeat them); long ones are greetings + noise
    sources, summaries, refs = [], [], []
    for i in range(n):
        if i % 2:
            first = f"Budget meeting {i} moved."
            refs.append([first.lower(), first])
        else:
            first = " ".join(["Hi all, I hope the week is going well and everyone is fine"] * 2) + "."
            refs.append([f"topic {i}", f"the topic {i}"])
        sources.append(f"{first}\nMore text about topic {i}.")
        summaries.append(f"topic {i}")
    return sources, summaries, refs


def _score(hyp, refs):
    words = set(hyp.lower().split())
    return float(np.mean([len(words & set(r.lower().split())) / max(1, len(words | set(r.lower().split())))
                          for r in refs]))


def _loss(sources, targets):  # a stand-in for Seq2SeqModel.target_loss: longer targets are less likely
    return np.array([0.1 * len(t.split()) for t in targets])


def test_fit_and_choose_learn_when_the_lead_is_the_subject():
    sources, summaries, refs = _data()
    switch = lead_switch.fit(sources, summaries, refs, _score, _loss, folds=4)
    assert switch["features"] == list(lead_switch.FEATURES) and switch["fitted_on"] == 80
    assert switch["lead_wins"] == 0.5
    cf = switch["cross_fitted"]
    assert cf["score"] > max(cf["summary_score"], cf["lead_score"])  # better than either alone, held out
    out = lead_switch.choose(switch, sources, summaries, _loss)
    assert out[1] == lead(sources[1]) and out[0] == summaries[0]
    assert lead_switch.choose(switch, ["", sources[1]], ["", summaries[1]], _loss) == ["", lead(sources[1])]


def test_fit_refuses_one_sided_data_and_a_stale_switch():
    sources, summaries, refs = _data()
    with pytest.raises(ValueError, match="needs both outcomes"):
        lead_switch.fit(sources[::2], summaries[::2], refs[::2], _score, _loss)
    switch = lead_switch.fit(sources, summaries, refs, _score, _loss, folds=4)
    with pytest.raises(ValueError, match="refit it"):
        lead_switch.choose({**switch, "features": ["old"]}, sources, summaries, _loss)
