"""The extractive lead baseline for summarization: the first sentences of the source."""

from __future__ import annotations

import re


def lead(text: str, n: int = 1) -> str:
    """The first ``n`` sentences (or lines) of ``text``."""
    parts = [p.strip() for p in re.split(r"(?<=[.!?。！？])\s+|\n+", text.strip()) if p.strip()]
    return " ".join(parts[:n])
