"""``python -m scratchlm.serve ...``: the same as ``scratchlm serve ...``."""

import sys

from scratchlm.cli import main

raise SystemExit(main(["serve", *sys.argv[1:]]))
