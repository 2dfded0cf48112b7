"""``python -m egsde_rt.cli``: the same as ``egsde-rt``."""

import sys

from . import main

sys.exit(main())
