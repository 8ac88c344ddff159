"""``python -m scratchlm`` runs the CLI (the same as the ``scratchlm`` command)."""

from scratchlm.cli import main

raise SystemExit(main())
