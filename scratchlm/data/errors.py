"""Errors shared by the data modules (their own module, so that the modules raising them need not import
each other)."""


class LeakageError(ValueError):
    """Held-out (test) data would reach training: a test split asked for as training text, a test example
    that also occurs in the training data, or a model pretrained on the test split it is scored on."""
