"""Classification metrics (scikit-learn) and a confusion-matrix plot (matplotlib, optional).

Every value returned is a plain Python number, string, list or dict, so the result goes straight into
JSON (metrics.jsonl, eval reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plain(x):
    """numpy scalars/arrays -> Python numbers/lists, recursively."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def _positive_scores(y_score, n: int) -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 2:
        if s.shape[1] != 2:
            raise ValueError(f"binary y_score must have shape (n,) or (n, 2), got {s.shape}")
        s = s[:, 1]
    if s.shape != (n,):
        raise ValueError(f"y_score has shape {s.shape} for {n} examples")
    return s


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence,
                           label_names: Sequence[str] | None = None, y_score=None) -> dict:
    """Accuracy, macro precision/recall/F1, a per-class report, the confusion matrix and (binary only,
    when ``y_score`` is given) ROC-AUC.

    labels: the class values, in the order used for the report and the matrix rows/columns (true
    class = row, predicted = column, as sklearn). Classes absent from a split count 0 (zero_division=0).
    y_score: for two labels, the score of ``labels[1]`` per example, shape (n,), or (n, 2) with columns
    in ``labels`` order. ``roc_auc`` is None when y_true holds a single class (AUC is undefined)."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true, y_pred, labels = np.asarray(y_true), np.asarray(y_pred), list(labels)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be 1-D and of equal length")
    if len(y_true) == 0:
        raise ValueError("classification_metrics needs at least one example")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of distinct classes, got {labels}")
    unknown = sorted(set(np.unique(y_true).tolist()) - set(labels), key=str)
    if unknown:
        raise ValueError(f"y_true holds classes {unknown[:5]} that are not in labels {labels}")
    names = [str(x) for x in label_names] if label_names is not None else [str(x) for x in labels]
    if len(names) != len(labels):
        raise ValueError(f"{len(names)} label_names for {len(labels)} labels")

    p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                                  zero_division=0)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f1),
        "labels": _plain(labels),
        "label_names": names,
        "report": _plain(classification_report(y_true, y_pred, labels=labels, target_names=names,
                                               output_dict=True, zero_division=0)),
        "confusion_matrix": _plain(confusion_matrix(y_true, y_pred, labels=labels)),
    }
    if y_score is not None and len(labels) == 2:
        scores = _positive_scores(y_score, len(y_true))
        positive = (y_true == labels[1]).astype(np.int64)
        out["roc_auc"] = float(roc_auc_score(positive, scores)) if 0 < positive.sum() < len(positive) else None
    return out


def plot_confusion_matrix(cm, label_names: Sequence[str], path: str | Path, *, normalize: bool = False,
                          title: str | None = None) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) to a PNG file; needs matplotlib."""
    cm = np.asarray(cm, dtype=np.float64)
    names = [str(x) for x in label_names]
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if len(names) != cm.shape[0]:
        raise ValueError(f"{len(names)} label_names for a {cm.shape[0]}x{cm.shape[1]} confusion matrix")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plot_confusion_matrix needs matplotlib, which is not installed "
                          "(pip install matplotlib); the metrics themselves do not need it") from e
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(names)
    size = max(4.0, 0.6 * k + 2)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if k <= 30:
        top = cm.max() if cm.size else 0
        for i in range(k):
            for j in range(k):
                v = cm[i, j]
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if top and v > top / 2 else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
