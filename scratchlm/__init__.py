"""scratchlm: build a small language model from scratch and fine-tune it into an efficient NLP decoder."""

__version__ = "0.1.0"
