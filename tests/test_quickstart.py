"""The newcomer's path: `scratchlm quickstart` end to end on real data (a very short budget)."""

import json
import subprocess
import sys

from scratchlm.model.folder import load_model, published_models


def test_quickstart_end_to_end(tmp_path, cli_env):
    out = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, "-m", "scratchlm.cli", "quickstart", "--out", str(out), "--minutes", "0.15",
         "--train.eval_interval=20", "--model.n_layer=2", "--train.progress=false",
         "--sentiment-minutes", "0.1", "--decoder-minutes", "0.1", "--sentiment-examples", "200"],
        capture_output=True, text=True, timeout=900, env=cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["stopped_because"] == "max_time_s"
    bpb = report["validation_by_corpus"]["tinyshakespeare"]["val_bpb"]
    assert 1.0 < bpb < 8.0  # a real score on held-out text
    samples = (out / "samples.txt").read_text()
    assert samples.count("--- prompt") == 3 and len(samples) > 200
    for needle in ("report:", "checkpoint:", "samples:"):
        assert needle in proc.stdout
    assert load_model(out / "model").model.cfg.n_layer == 2
    # the sentiment stage: three classifiers on the same reviews, one comparison page
    summary = json.loads((out / "quickstart.json").read_text())
    assert [r["name"] for r in summary["sentiment"]] == ["decoder", "bow", "gru"]
    # the decoder starts from the published base when there is one, else from the few-minute model
    assert summary["sentiment_init"] == ("base" if "base" in published_models() else str(out / "model"))
    assert all(0.3 < r["test_accuracy"] <= 1.0 for r in summary["sentiment"])
    assert (out / "sentiment" / "report.html").exists() and "test acc" in proc.stdout

    # the next steps the quickstart prints: generate and evaluate from the model it made
    gen = subprocess.run([sys.executable, "-m", "scratchlm.cli", "generate", "--model", str(out / "model"),
                          "ROMEO:", "--max-new-tokens", "12", "--seed", "0"],
                         capture_output=True, text=True, timeout=300, env=cli_env)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.startswith("ROMEO:") and len(gen.stdout) > len("ROMEO:\n")
    ev = subprocess.run([sys.executable, "-m", "scratchlm.cli", "evaluate", "--model", str(out / "model"),
                         "--data", "tinyshakespeare:validation", "--json"],
                        capture_output=True, text=True, timeout=300, env=cli_env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    metrics = json.loads(ev.stdout)
    assert metrics["tokens"] > 10_000 and 1.0 < metrics["val_bpb"] < 8.0
