"""``python -m minicv``: the ``minicv`` command, where the console script is not on PATH."""

import sys

from minicv.cli import main

sys.exit(main())
