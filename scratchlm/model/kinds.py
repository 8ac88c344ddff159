"""What a model folder can hold: the ``task`` and ``kind`` values its config.json records. Kept apart from
the loader (``folder``) so that the CLI builds its parsers without importing torch."""

TASKS = ("lm", "classify", "translate", "summarize")  # no task recorded: lm
SEQ2SEQ_TASKS = ("translate", "summarize")
DECODER_TASKS = ("lm", *SEQ2SEQ_TASKS)  # the tasks whose decoder folder is a plain Transformer
# kind: "decoder" unless one of these (no kind recorded: decoder)
RECURRENT_CLASSIFIER_KINDS = ("rnn", "lstm", "gru")
RECURRENT_SEQ2SEQ_KINDS = ("gru", "lstm")
CLASSICAL_KINDS = ("bow", "tfidf")
