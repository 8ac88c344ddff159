"""Classical (non-neural) text-classification baselines: bag-of-words / TF-IDF + logistic regression."""

from scratchlm.baselines.classical import (
    CJK_THRESHOLD,
    KINDS,
    LANGUAGES,
    SEGMENTS,
    ClassicalConfig,
    ClassicalModel,
    TaggerMissingError,
    TokenAnalyzer,
    chinese_stopwords,
    detect_language,
    english_stopwords,
    fit_classical,
)

__all__ = [
    "CJK_THRESHOLD",
    "KINDS",
    "LANGUAGES",
    "SEGMENTS",
    "ClassicalConfig",
    "ClassicalModel",
    "TaggerMissingError",
    "TokenAnalyzer",
    "chinese_stopwords",
    "detect_language",
    "english_stopwords",
    "fit_classical",
]
