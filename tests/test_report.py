"""The comparison page: runs collected from folders, sorted table, escaping, embedded pictures, errors."""

from __future__ import annotations

import base64
import json
import re
import sys

import numpy as np
import pytest

from scratchlm.report import collect_runs, fmt_count, fmt_duration, fmt_ms, fmt_pct, main, write_report
from scratchlm.tasks.metrics import classification_metrics

NAMES = ["negative", "positive"]


def metrics(accuracy: float, n: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    wrong = rng.permutation(n)[: int(round(n * (1 - accuracy)))]
    pred = y.copy()
    pred[wrong] = 1 - pred[wrong]
    score = np.where(pred == 1, 0.8, 0.2) + rng.normal(0, 0.05, n)
    return classification_metrics(y, pred, [0, 1], NAMES, y_score=score)


def make_run(root, folder, name, kind, accuracy, *, dataset="imdb", curves=False, **extra):
    d = root / folder
    d.mkdir(parents=True)
    report = {"task": "classify", "dataset": dataset, "name": name, "kind": kind,
              "description": f"{kind} model", "parameters": 6_512_345, "trainable_parameters": 1_234,
              "train_seconds": 252.4, "latency_ms_per_example": 0.4213, "test": metrics(accuracy),
              "test_split": f"{dataset}:test", "command": f"scratchlm classify --name {name}", **extra}
    (d / "report.json").write_text(json.dumps(report))
    if curves:
        rows = [{"kind": "train", "step": s, "loss": 0.7 - 0.01 * s, "lr": 1e-3} for s in range(1, 21)]
        rows += [{"kind": "eval", "step": s, "val_loss": 0.6 - 0.01 * s, "val_accuracy": 0.6 + 0.01 * s,
                  "val_f1": 0.6} for s in (10, 20)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a_bow", "bow", "bow", 0.85)
    make_run(root, "b_lstm", "<b>x</b>", "lstm", 0.875, curves=True, parameters=2_100_000,
             trainable_parameters=2_100_000, train_seconds=41.0)
    make_run(root, "c_decoder", "decoder-full", "decoder", 0.915, curves=True,
             val=metrics(0.9, n=100, seed=1), command="scratchlm classify a|b ```x```")
    (root / "not_a_run").mkdir()  # skipped: no report.json
    return root


def test_formatters():
    assert fmt_pct(0.91234) == "91.23%" and fmt_pct(None) == "—"
    assert [fmt_count(n) for n in (950, 123_456, 6_512_000, 1.2e9, 999_999)] == \
        ["950", "123.5K", "6.5M", "1.2B", "1.0M"]
    assert [fmt_duration(s) for s in (3.24, 42, 252, 7500)] == ["3.2s", "42s", "4m 12s", "2h 05m"]
    assert [fmt_ms(x) for x in (0.0123, 1.234, 12.34, 123.4)] == ["0.0123", "1.23", "12.3", "123"]


def test_report_table_sorted_values_escaped_and_images_embedded(runs_dir, tmp_path):
    runs = collect_runs([runs_dir])
    assert sorted(r["name"] for r in runs) == ["<b>x</b>", "bow", "decoder-full"]
    out = tmp_path / "out"
    written = write_report(runs, out)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert written["markdown"] == out / "report.md" and written["html"] == out / "report.html"
    assert (out / "loss_curves.png").is_file() and written["loss_curves"] == out / "loss_curves.png"
    for slug in ("bow", "b_x_b", "decoder-full"):
        assert (out / f"confusion_{slug}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the results table, best first
    table = md.split("## Results")[1].split("##")[0]
    order = [line.split("|")[2].strip() for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert order == ["decoder-full", "&lt;b&gt;x&lt;/b&gt;", "bow"]
    first = table.splitlines()[4]
    for value in ("91.50%", "6.5M", "1.2K", "4m 12s", "0.421", "1.000×"):
        assert value in first, value
    lstm_row = next(line for line in table.splitlines() if "&lt;b&gt;" in line)
    assert "87.50%" in lstm_row and "2.1M" in lstm_row and "41s" in lstm_row and "0.956×" in lstm_row
    dec = next(r for r in runs if r["name"] == "decoder-full")
    assert f"{100 * dec['test']['f1_macro']:.2f}%" in first
    assert f"{100 * dec['test']['roc_auc']:.2f}%" in first
    assert "![loss curves](loss_curves.png)" in md and "(confusion_decoder-full.png)" in md
    assert "positive" in md.split("## Per-class F1")[1]
    assert "scratchlm classify --name bow" in md and "````\nscratchlm classify a|b ```x```\n````" in md

    # HTML: order, escaping, self-contained pictures
    assert page.index("decoder-full") < page.index("&lt;b&gt;x&lt;/b&gt;") < page.index("<td class=\"\">bow</td>")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # loss curves + 3 confusion matrices
    assert all(base64.b64decode(b)[:4] == b"\x89PNG" for b in images)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "91.50%" in page and "scratchlm classify a|b ```x```" in page


def test_run_folder_and_parent_folder_and_duplicates(runs_dir):
    one = collect_runs(runs_dir / "c_decoder")
    assert [r["name"] for r in one] == ["decoder-full"]
    both = collect_runs([runs_dir / "c_decoder", runs_dir, runs_dir / "c_decoder" / "report.json"])
    assert len(both) == 3  # each run once


def test_mixed_datasets_rejected_unless_allowed(runs_dir, tmp_path, monkeypatch):
    make_run(runs_dir, "d_sst", "sst-lstm", "lstm", 0.8, dataset="sst2")
    with pytest.raises(ValueError, match=r"different datasets.*dataset=sst2: sst-lstm"):
        collect_runs(runs_dir)
    runs = collect_runs(runs_dir, allow_mixed=True)
    assert len(runs) == 4
    monkeypatch.setattr("scratchlm.report._matplotlib_available", lambda: False)  # tables only: quicker
    write_report(runs, tmp_path / "mixed")
    assert "imdb, sst2" in (tmp_path / "mixed" / "report.md").read_text()


def test_nothing_found_names_the_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run folders.*empty"):
        collect_runs([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="missing"):
        collect_runs([tmp_path / "missing"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "report.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="lacks the key.*test"):
        collect_runs(bad)


def test_without_matplotlib_tables_only(runs_dir, tmp_path, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # importing it now raises ImportError
    written = write_report(collect_runs(runs_dir), tmp_path / "plain")
    assert set(written) == {"markdown", "html"}
    page = (tmp_path / "plain" / "report.html").read_text()
    assert "matplotlib is not installed" in page and "<img" not in page and "91.50%" in page
    assert not list((tmp_path / "plain").glob("*.png"))


def test_command_line(runs_dir, capsys, monkeypatch):
    monkeypatch.setattr("scratchlm.report._matplotlib_available", lambda: False)  # tables only: quicker
    assert main([str(runs_dir), "--title", "IMDb & friends"]) == 0
    page = (runs_dir / "comparison" / "report.html").read_text()
    assert "<title>IMDb &amp; friends</title>" in page
    assert "3 runs ->" in capsys.readouterr().out
    assert len(collect_runs(runs_dir)) == 3  # the output folder is not mistaken for a run
