"""The comparison page: runs collected from folders, sorted table, escaping, embedded pictures, errors."""

from __future__ import annotations

import base64
import json
import re
import sys

import numpy as np
import pytest

from scratchlm.stages.report import collect_runs, fmt_count, fmt_duration, fmt_ms, fmt_pct, main, write_report
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
    monkeypatch.setattr("scratchlm.stages.report._matplotlib_available", lambda: False)  # tables only: quicker
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
    monkeypatch.setattr("scratchlm.stages.report._matplotlib_available", lambda: False)  # tables only: quicker
    assert main([str(runs_dir), "--title", "IMDb & friends"]) == 0
    page = (runs_dir / "comparison" / "report.html").read_text()
    assert "<title>IMDb &amp; friends</title>" in page
    assert "3 runs ->" in capsys.readouterr().out
    assert len(collect_runs(runs_dir)) == 3  # the output folder is not mistaken for a run


# ---------------------------------------------------------------------------------------------------
# translation and summarization runs
# ---------------------------------------------------------------------------------------------------
BLEU_SIG = "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.4.0"
CHRF_SIG = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.0"


def seq2seq_mode(task: str, score: float | None, beams: int, sps: float, sig: str = BLEU_SIG) -> dict:
    if task == "translate":
        scores = {"bleu": {"score": score, "signature": sig, "bp": 1.0, "n": 50},
                  "chrf": {"score": score + 10, "signature": CHRF_SIG, "n": 50}}
    else:
        scores = {"rouge": {"rouge1": score + 10, "rouge2": score - 10, "rougeL": score,
                            "tokenizer": "rouge-score default + Porter stemmer", "n": 50}}
    return {**scores, "num_beams": beams, "sentences_per_s": sps, "seconds": 50 / sps}


def make_seq2seq_run(root, folder, name, kind, task, greedy, beam, *, direction="en-zh", dataset="tatoeba",
                     curves=False, predictions=None, sig=BLEU_SIG, **extra):
    d = root / folder
    d.mkdir(parents=True)
    test = {}
    if greedy is not None:
        test["greedy"] = seq2seq_mode(task, greedy, 1, 40.0, sig)
    if beam is not None:
        test["beam"] = seq2seq_mode(task, beam, 4, 12.5, sig)
    report = {"task": task, "dataset": dataset, "name": name, "kind": kind, "direction": direction,
              "description": f"{kind} model", "parameters": 25_000_000, "trainable_parameters": 25_000_000,
              "train_seconds": 600.0, "test_split": "test", "test_examples": 50,
              "command": f"scratchlm finetune {task} --name {name}", "test": test, **extra}
    (d / "report.json").write_text(json.dumps(report, ensure_ascii=False))
    if curves:
        rows = [{"kind": "train", "step": s, "loss": 5 - 0.1 * s} for s in range(1, 11)]
        rows += [{"kind": "eval", "step": s, "val_loss": 4.5 - 0.1 * s, "val_ppl": 50.0} for s in (5, 10)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if predictions is None:
        modes = [m for m, v in (("greedy", greedy), ("beam", beam)) if v is not None]
        predictions = [{"source": f"{name} source {i}", "references": [f"{name} ref {i}", "other ref"],
                        **{m: f"{name} {m} {i}" for m in modes}} for i in range(5)]
    (d / "predictions_test.jsonl").write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8")
    return d


def results_order(md: str) -> list[str]:
    table = md.split("## Results")[1].split("##")[0]
    return [line.split("|")[2].strip() for line in table.splitlines() if re.match(r"\| \d+ \|", line)]


def results_row(md: str, name: str) -> list[str]:
    table = md.split("## Results")[1].split("##")[0]
    line = next(line for line in table.splitlines() if re.match(rf"\| \d+ \| {re.escape(name)} \|", line))
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture
def translate_dir(tmp_path):
    root = tmp_path / "mt"
    long_source = "word " * 100  # 500 characters
    tricky = [{"source": "<script>alert(1)</script> a|b *bold* _it_ [x](y)", "references": ["我爱你 & <b>"],
               "greedy": "g0", "beam": "<i>beam</i> | `code`"},
              {"source": long_source, "references": ["r1"], "greedy": "g1", "beam": "b1"},
              "not json",  # a torn line: skipped
              {"source": "third", "references": ["r3"], "greedy": "g3", "beam": "b3"},
              {"source": "FOURTH-NOT-SHOWN", "references": ["r4"], "greedy": "g4", "beam": "b4"}]
    d = make_seq2seq_run(root, "a_decoder", "decoder", "decoder", "translate", 25.0, 19.0, curves=True,
                         predictions=[{"source": "x", "references": ["y"], "greedy": "z", "beam": "w"}])
    # the torn line must be written raw, not as JSON
    (d / "predictions_test.jsonl").write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in tricky),
        encoding="utf-8")
    make_seq2seq_run(root, "b_gru", "gru", "gru", "translate", 18.0, 21.0)
    make_seq2seq_run(root, "c_lstm", "lstm", "lstm", "translate", 20.0, None)  # no beam decode: sorted by greedy
    return root


def test_translation_report(translate_dir, tmp_path):
    runs = collect_runs(translate_dir)
    assert len(runs) == 3
    out = tmp_path / "out"
    written = write_report(runs, out)
    assert set(written) == {"markdown", "html", "loss_curves"}
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("confusion_*.png"))
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()

    assert md.startswith("# tatoeba translate en-zh: 3 models compared")
    assert "direction: en-zh" in md and "test examples: 50" in md and "beam search with 4 beams" in md
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "#", "model", "kind", "BLEU greedy", "BLEU beam", "chrF greedy", "chrF beam", "parameters", "trainable",
        "train time", "sentences/s greedy", "sentences/s beam"]
    # by beam BLEU (gru 21 > decoder 19), the greedy-only lstm ranked by its greedy 20
    assert results_order(md) == ["gru", "lstm", "decoder"]
    assert results_row(md, "gru") == ["1", "gru", "gru", "18.00", "21.00", "28.00", "31.00", "25.0M", "25.0M",
                                      "10m 00s", "40.0", "12.5"]
    assert results_row(md, "lstm")[3:7] == ["20.00", "—", "30.00", "—"]
    assert results_row(md, "lstm")[-1] == "—"
    # signatures once, under the table (before the next section)
    assert md.count(BLEU_SIG) == 1 and md.count(CHRF_SIG) == 1
    assert md.index("## Results") < md.index(BLEU_SIG) < md.index("## Training curves")
    assert f"BLEU signature: `{BLEU_SIG}`" in md
    assert page.count(BLEU_SIG) == 1 and page.count(CHRF_SIG) == 1
    assert "![loss curves](loss_curves.png)" in md

    # examples: first 3 readable rows, first reference, beam prediction, escaped and cut
    ex = md.split("## Example predictions")[1].split("## Runs")[0]
    dec = ex.split("### decoder")[1]
    assert "| source | reference | prediction (beam) |" in dec
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b \\*bold\\* \\_it\\_ \\[x\\](y)" in dec
    assert "我爱你 &amp; &lt;b&gt;" in dec and "other ref" not in ex
    assert "&lt;i&gt;beam&lt;/i&gt; \\| \\`code\\`" in dec and "g0" not in dec
    assert "third" in dec and "FOURTH-NOT-SHOWN" not in md
    cut = re.search(r"\| (word[ a-z]*…) \|", dec).group(1)
    assert len(cut) <= 200
    assert "gru source 0" in ex and "gru beam 0" in ex and "gru source 3" not in ex
    assert "lstm greedy 0" in ex and "| prediction (greedy) |" in ex.split("### lstm")[1]

    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; a|b *bold*" in page
    assert "&lt;i&gt;beam&lt;/i&gt; | `code`" in page and "FOURTH-NOT-SHOWN" not in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 1 and base64.b64decode(images[0])[:4] == b"\x89PNG"
    assert "<script" not in page and "http://" not in page and "https://" not in page
    runs_md = md.split("## Runs")[1]
    assert "test (test), beam (4 beams): BLEU 21.00, chrF 31.00 on 50 examples" in runs_md
    assert "scratchlm finetune translate --name gru" in runs_md


@pytest.fixture
def summarize_dir(tmp_path):
    root = tmp_path / "sum"
    make_seq2seq_run(root, "a_lead", "lead-1", "lead", "summarize", 24.0, None, direction="en-en",
                     dataset="aeslc", parameters=0, trainable_parameters=0, train_seconds=0.0)
    make_seq2seq_run(root, "b_decoder", "decoder", "decoder", "summarize", 27.0, 30.0, direction="en-en",
                     dataset="aeslc")
    make_seq2seq_run(root, "c_lstm", "lstm", "lstm", "summarize", 22.0, 23.0, direction="en-en", dataset="aeslc")
    return root


def test_summarization_report_with_lead_baseline(summarize_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("scratchlm.stages.report._matplotlib_available", lambda: False)  # tables only: quicker
    out = tmp_path / "out"
    assert set(write_report(collect_runs(summarize_dir), out)) == {"markdown", "html"}
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    assert [c.strip() for c in header.strip("|").split("|")][3:9] == [
        "ROUGE-1 greedy", "ROUGE-2 greedy", "ROUGE-L greedy", "ROUGE-1 beam", "ROUGE-2 beam", "ROUGE-L beam"]
    assert results_order(md) == ["decoder", "lead-1", "lstm"]  # lead ranked by its greedy ROUGE-L
    assert results_row(md, "decoder")[3:9] == ["37.00", "17.00", "27.00", "40.00", "20.00", "30.00"]
    lead = results_row(md, "lead-1")
    assert lead[3:9] == ["34.00", "14.00", "24.00", "—", "—", "—"] and lead[-2:] == ["40.0", "—"]
    assert lead[9:12] == ["0", "0", "0.0s"]
    assert md.count("rouge-score default + Porter stemmer") == 1
    assert "matplotlib is not installed" in md and "<img" not in page
    assert "lead-1 greedy 0" in md and "| prediction (greedy) |" in md.split("### lead-1")[1]
    assert "decoder beam 0" in md and "decoder greedy 0" not in md
    runs_md = md.split("## Runs")[1].split("### lead-1")[1].split("###")[0]
    assert "greedy (1 beam): ROUGE-1/2/L 34.00/14.00/24.00" in runs_md and "beam (" not in runs_md
    assert page.index(">decoder<") < page.index(">lead-1<") < page.index(">lstm<")
    assert 'class="best"' in page


def test_seq2seq_mixing_rules(summarize_dir, translate_dir, runs_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("scratchlm.stages.report._matplotlib_available", lambda: False)
    make_seq2seq_run(translate_dir, "d_zh_en", "zh-en-decoder", "decoder", "translate", 30.0, 31.0,
                     direction="zh-en", sig=BLEU_SIG.replace("tok:zh", "tok:13a"))
    with pytest.raises(ValueError, match=r"different directions.*direction=zh-en: zh-en-decoder"):
        collect_runs(translate_dir)
    runs = collect_runs(translate_dir, allow_mixed=True)
    write_report(runs, tmp_path / "both")
    md = (tmp_path / "both" / "report.md").read_text()
    assert "direction: en-zh, zh-en" in md
    # two BLEU signatures now: each printed once, naming its runs; chrF still agrees
    assert md.count("BLEU signature:") == 2 and md.count(CHRF_SIG) == 1
    assert f"BLEU signature: `{BLEU_SIG}` (gru, lstm, decoder)" in md  # the runs in table order
    assert "tok:13a|smooth:exp|version:2.4.0` (zh-en-decoder)" in md

    with pytest.raises(ValueError, match="different tasks"):
        collect_runs([translate_dir / "b_gru", summarize_dir])
    with pytest.raises(ValueError, match="different tasks"):
        collect_runs([runs_dir, translate_dir / "b_gru"])
    mixed = collect_runs([translate_dir / "b_gru", summarize_dir, runs_dir], allow_mixed=True)
    with pytest.raises(ValueError, match="cannot share one page"):
        write_report(mixed, tmp_path / "nope")


def test_seq2seq_run_without_scores_or_predictions(tmp_path, monkeypatch):
    monkeypatch.setattr("scratchlm.stages.report._matplotlib_available", lambda: False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "report.json").write_text(json.dumps({"task": "translate", "name": "x", "test": {"beam": {}}}))
    with pytest.raises(ValueError, match="'greedy' and/or 'beam'.*'bleu'"):
        collect_runs(bad)
    d = make_seq2seq_run(tmp_path / "runs", "a", "only-beam", "decoder", "translate", None, 12.0)
    (d / "predictions_test.jsonl").unlink()
    write_report(collect_runs(d), tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No predictions_test.jsonl in the run folder." in md
    assert results_row(md, "only-beam")[3:5] == ["—", "12.00"]
