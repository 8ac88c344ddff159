"""The models published in the repository (models/<name>): every folder verifies and loads by name (fast), and
every score its card states is reproduced by `scratchlm evaluate` on the published weights (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from scratchlm.export.publish import flat_scores
from scratchlm.model.folder import load_model, published_models

PUBLISHED = {name: folder for name, folder in published_models().items() if REPO in folder.parents}
# metric -> how far a re-scored number may be from the card's (bits/byte to the 3rd decimal; points otherwise)
# (accuracy and F1 are fractions: 1e-3 is 0.1 point)
TOLERANCE = {"val_bpb": 1e-3, "accuracy": 1e-3, "f1_macro": 1e-3, "bleu": 0.1, "chrf": 0.1, "rouge1": 0.1,
             "rouge2": 0.1, "rougeL": 0.1, "rouge1_mean_refs": 0.1, "rouge2_mean_refs": 0.1, "rougeL_mean_refs": 0.1}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_model_verifies_and_loads_by_name(name):
    loaded = load_model(name)  # checks every file against manifest.json
    config = json.loads((PUBLISHED[name] / "config.json").read_text())
    assert config["published"]["name"] == name
    assert (PUBLISHED[name] / "README.md").read_text().startswith(f"# {name}")
    assert loaded.model is not None


def _scores(name) -> dict[str, dict]:
    """The card's scores: config.json's published.scores, else the card's "Held-out scores" table (bits per
    byte; folders published before the scores were stored in config.json)."""
    scores = json.loads((PUBLISHED[name] / "config.json").read_text())["published"].get("scores")
    if scores:
        return scores
    card = (PUBLISHED[name] / "README.md").read_text().split("## Held-out scores", 1)
    rows = card[1].split("\n## ", 1)[0].splitlines() if len(card) == 2 else []
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows if r.startswith("| ") and ":" in r]
    return {c[0]: {"val_bpb": float(c[1])} for c in cells if c[1]}


@pytest.mark.slow
@pytest.mark.parametrize("name,data", [(n, d) for n in sorted(PUBLISHED) for d in _scores(n)])
def test_published_card_scores_are_reproduced(name, data, cli_env):
    card = flat_scores(_scores(name)[data])
    proc = subprocess.run([sys.executable, "-m", "scratchlm", "evaluate", "--model", name, "--data", data, "--json"],
                          capture_output=True, text=True, timeout=3600, cwd=REPO,
                          env={**cli_env, "OMP_NUM_THREADS": str(os.cpu_count() or 1)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = flat_scores(json.loads(proc.stdout))
    checked = [k for k in card if (k in TOLERANCE or k.startswith("f1_")) and k in got]
    assert checked, f"no comparable metric for {name} on {data}: card {sorted(card)}, evaluate {sorted(got)}"
    for k in checked:
        assert abs(got[k] - card[k]) <= TOLERANCE.get(k, 1e-3), (name, data, k, got[k], card[k])
