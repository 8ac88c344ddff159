"""scratchlm: build a small language model from scratch and fine-tune it into an efficient NLP decoder."""

__version__ = "0.1.0"


def load(path, *, device: str = "cpu", name: str | None = None):
    """Load a model folder or a published model name as a ``scratchlm.api.Model`` (generate / classify /
    translate / summarize as its task allows). Imported lazily so that ``import scratchlm`` (and the CLI)
    stays light."""
    from .api import load as _load

    return _load(path, device=device, name=name)
