"""``python -m eval``: the same as ``paperchat eval`` (see eval/suite.py)."""

import sys

from .suite import main

sys.exit(main())
