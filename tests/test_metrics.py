"""Classification metrics agree with scikit-learn's own functions; the plot needs matplotlib."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from scratchlm.tasks.metrics import classification_metrics, plot_confusion_matrix


def random_labels(k: int, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
    scores = np.clip(0.5 * (y_true == 1) + 0.6 * rng.random(n), 0, 1)
    return y_true, y_pred, scores


@pytest.mark.parametrize("k", [2, 3])
def test_metrics_equal_sklearn(k):
    y_true, y_pred, scores = random_labels(k, seed=k)
    labels = list(range(k))
    names = [f"class{i}" for i in labels]
    m = classification_metrics(y_true, y_pred, labels, names, y_score=scores if k == 2 else None)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    for key, fn in (("precision_macro", precision_score), ("recall_macro", recall_score),
                    ("f1_macro", f1_score)):
        assert m[key] == pytest.approx(fn(y_true, y_pred, labels=labels, average="macro", zero_division=0),
                                       abs=1e-12)
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    report = classification_report(y_true, y_pred, labels=labels, target_names=names, output_dict=True,
                                   zero_division=0)
    assert set(m["report"]) == set(report)
    for name in names:
        for stat in ("precision", "recall", "f1-score", "support"):
            assert m["report"][name][stat] == pytest.approx(report[name][stat], abs=1e-12)
    assert m["n"] == len(y_true) and m["label_names"] == names
    if k == 2:
        assert m["roc_auc"] == pytest.approx(roc_auc_score(y_true, scores), abs=1e-12)
    else:
        assert "roc_auc" not in m
    json.dumps(m)  # plain Python values only


def test_roc_auc_only_for_binary_with_scores():
    y_true, y_pred, scores = random_labels(2, seed=4)
    assert "roc_auc" not in classification_metrics(y_true, y_pred, [0, 1])
    two_col = np.stack([1 - scores, scores], axis=1)
    m = classification_metrics(y_true, y_pred, [0, 1], y_score=two_col)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y_true, scores))
    # string labels; the score is for labels[1]
    names = np.array(["neg", "pos"])
    m2 = classification_metrics(names[y_true], names[y_pred], ["neg", "pos"], y_score=scores)
    assert m2["roc_auc"] == pytest.approx(m["roc_auc"]) and m2["accuracy"] == m["accuracy"]
    assert classification_metrics([1, 1], [1, 0], [0, 1], y_score=[0.3, 0.7])["roc_auc"] is None
    y3, p3, _ = random_labels(3)
    assert "roc_auc" not in classification_metrics(y3, p3, [0, 1, 2], y_score=np.ones((len(y3), 3)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="not in labels"):
        classification_metrics([0, 1, 2], [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="label_names"):
        classification_metrics([0, 1], [0, 1], [0, 1], ["a"])
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], [0, 1])


def test_plot_without_matplotlib_raises_a_clear_error(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_confusion_matrix([[3, 1, 0], [0, 4, 2], [1, 0, 5]], ["a", "b", "c"], tmp_path / "sub" / "cm.png",
                                 normalize=True, title="val")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
