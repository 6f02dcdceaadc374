"""``python -m embedopt.serve [--config FILE]``: the same as ``embedopt serve``."""

import sys

from . import main

sys.exit(main())
