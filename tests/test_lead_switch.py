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


def test_a_summarizer_run_fits_saves_and_uses_the_switch(tmp_path, tiny_lm_dir):
    import json

    import pandas as pd

    from scratchlm.infer.seq2seq import load_seq2seq
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.stages.seq2seq import build_config, run

    def rows(n, offset):  # half the references repeat the first sentence (the lead wins), half share nothing
        out = []
        for i in range(offset, offset + n):
            first = f"Budget meeting number {i} moved to room {i}."
            refs = [first, first.lower(), f"budget meeting {i}"] if i % 2 else ["zz qq", "xx yy", "ww vv"]
            out.append({"source": f"{first}\nPlease bring the forecasts for week {i}.", "target": refs[0],
                        "r0": refs[0], "r1": refs[1], "r2": refs[2]})
        return out

    for split, n, offset in (("train", 60, 0), ("validation", 40, 100), ("test", 10, 200)):
        pd.DataFrame(rows(n, offset)).to_parquet(tmp_path / f"{split}.parquet")
    over = [f"init={tiny_lm_dir}", f"data.dataset={tmp_path}", "data.reference_columns=[r0,r1,r2]",
            f"out_root={tmp_path / 'runs'}", "max_target_tokens=16", "train.max_steps=4", "train.micro_batch_size=8",
            "train.progress=false", "train.tensorboard=false", "train.device=cpu", "train.precision=fp32",
            "train.threads=1", "decode.num_beams=1", "decode.max_new_tokens=8", "eval_greedy=false",
            "lead_switch=true"]
    lines = []
    report = run(build_config(None, over, defaults={"task": "summarize"}), log=lines.append)
    assert any("lead switch fitted on 40" in str(x) for x in lines), lines
    folder = tmp_path / "runs/decoder/model"
    ckpt.verify(folder)  # config.json was rewritten with a fresh manifest
    switch = json.loads((folder / "config.json").read_text())["lead_switch"]
    assert switch["fitted_on"] == 40 and 0 < switch["lead_wins"] < 1
    preds = [json.loads(x)["beam"] for x in (tmp_path / "runs/decoder/predictions_test.jsonl").read_text().splitlines()]
    assert any(p.startswith("Budget meeting number") for p in preds)  # the test decode used the switch
    loaded = load_seq2seq(folder)
    from scratchlm.infer.seq2seq import DecodeConfig

    src = ["Budget meeting number 201 moved to room 201.\nPlease bring the forecasts."]
    off = loaded.generate(src, DecodeConfig(num_beams=1, max_new_tokens=8, lead_switch=False))
    assert report["test_examples"] == 10 and isinstance(off[0], str)
