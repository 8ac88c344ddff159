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


class Classifier(LoadedModel):
    """A model folder of task ``classify`` (made by ``finetune classify``, ``baseline`` or ``distill``)."""

    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])

    def predict_proba(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text {i} is empty")
        if isinstance(self.model, ClassicalModel):
            return np.asarray(self.model.predict_proba(texts), dtype=np.float32)
        clean = from_dict(CleanConfig, self.config.get("clean") or {})
        texts = [clean_text(t, clean) for t in texts]
        rows, _ = encode_texts(self.tokenizer, texts, self.config["max_length"], self.config["head_fraction"])
        return predict_proba(self.model, rows, self.tokenizer.pad_id, batch_size=batch_size, progress=progress)


def load_classifier(path: str | Path, device: str = "cpu") -> Classifier:
    return Classifier.view(load_model(path, device, tasks=("classify",)))
