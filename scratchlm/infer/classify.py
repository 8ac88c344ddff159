"""A loaded classifier's class probabilities: the texts cleaned as its training data was, cut to its
``max_length`` (head + tail), run in length-sorted batches. Neural and logistic-regression classifiers alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..baselines.classical import ClassicalModel
from ..config import from_dict
from ..data.clean import CleanConfig, clean_text
from ..model.folder import LoadedModel, load_model
from ..tasks.classify import encode_texts, predict_proba

# A token spans far fewer characters than this, so cutting a text to this many characters per token of
# ``max_length`` at each end keeps the head and tail tokens the model reads, and never tokenizes (or cleans) the
# middle of a huge text: a 50 MB one-line input would otherwise take gigabytes of token lists.
CHARS_PER_TOKEN_BOUND = 64


def clip_text(text: str, max_length: int) -> str:
    """The first and last ``max_length * CHARS_PER_TOKEN_BOUND`` characters of a longer text."""
    keep = max(1, max_length) * CHARS_PER_TOKEN_BOUND
    return text if len(text) <= 2 * keep else text[:keep] + "\n" + text[-keep:]


class Classifier(LoadedModel):
    """A model folder of task ``classify`` (made by ``finetune classify``, ``baseline`` or ``distill``)."""

    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])

    def predict_proba(self, texts: list[str], *, batch_size: int = 32, progress: bool = False,
                      stats: dict | None = None) -> np.ndarray:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is empty")
        if isinstance(self.model, ClassicalModel):
            return np.asarray(self.model.predict_proba(texts), dtype=np.float32)
        clean = from_dict(CleanConfig, self.config.get("clean") or {})
        max_length = int(self.config["max_length"])
        texts = [clean_text(clip_text(t, max_length), clean) for t in texts]
        rows, _ = encode_texts(self.tokenizer, texts, self.config["max_length"], self.config["head_fraction"])
        return predict_proba(self.model, rows, self.tokenizer.pad_id, batch_size=batch_size, progress=progress,
                             stats=stats)


def load_classifier(path: str | Path, device: str = "cpu") -> Classifier:
    return Classifier.view(load_model(path, device, tasks=("classify",)))
