"""benchmarks/seq2seq_decoding.py on random tiny models (its --tiny self-test): every model x mode x batch row."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("seq2seq_decoding", REPO / "benchmarks" / "seq2seq_decoding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_json_has_every_model_mode_and_batch(bench, capsys):
    assert bench.main(["--tiny", "decoder", "gru", "--sentences", "4", "--batch-sizes", "1", "2", "--beams", "1",
                       "2", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["machine"]
    assert m["cpu"] and m["torch"] and m["threads"] == 1 and m["logical_cpus"] >= 1
    assert [(i["label"], i["kind"], i["task"], i["direction"], i["sentences"]) for i in out["models"]] == [
        ("decoder", "decoder", "translate", "en-zh", 4), ("gru", "gru", "translate", "en-zh", 4)]
    assert all("[test 16" in i["data"] for i in out["models"])  # the recipe's carved test split
    got = sorted((r["model"], r["num_beams"], r["batch"]) for r in out["results"])
    assert got == sorted(itertools.product(("decoder", "gru"), (1, 2), (1, 2)))
    for r in out["results"]:
        assert r["mode"] == ("greedy" if r["num_beams"] == 1 else "beam-2")
        assert r["sentences"] == 4 and r["output_tokens"] > 0
        for key in ("seconds", "sentences_per_s", "output_tok_s", "mean_output_tokens", "peak_rss_mb"):
            assert r[key] > 0, (key, r)
        assert r["sentences_per_s"] == pytest.approx(4 / r["seconds"])
    assert out["peak_rss_mb"] >= max(r["peak_rss_mb"] for r in out["results"])


def test_input_file_and_table(bench, tmp_path, capsys):
    folder = bench.make_tiny_model(tmp_path, "decoder", max_target_tokens=6)
    src = tmp_path / "sources.txt"
    src.write_text("cat dog\n\nbig red sun\nsea bird tree\nunused line\n", "utf-8")
    assert bench.main(["--model", str(folder), "--input", str(src), "--sentences", "3", "--batch-sizes", "2",
                       "--beams", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "torch" in lines[0] and "threads=1" in lines[0]
    assert "3 sentences of" in lines[1]
    header = lines.index(next(x for x in lines if x.startswith("model")))
    rows = lines[header + 1:]
    assert len(rows) == 1 and rows[0].split()[:3] == ["decoder", "greedy", "2"]


def test_needs_a_model(bench):
    with pytest.raises(SystemExit):
        bench.main(["--sentences", "2"])
