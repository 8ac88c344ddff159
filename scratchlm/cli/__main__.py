"""``python -m scratchlm.cli``: the same as the ``scratchlm`` command."""

from scratchlm.cli import main

raise SystemExit(main())
