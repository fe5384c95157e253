"""``python -m skbert.cli``: the same as ``python -m skbert``."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
