"""``python -m scratchlm.serve --model DIR ...`` (the same as ``scratchlm serve``)."""

import sys

from . import main

sys.exit(main())
