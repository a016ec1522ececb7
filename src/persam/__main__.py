"""``python -m persam``: the same command line as the ``persam`` script."""

import sys

from persam.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
