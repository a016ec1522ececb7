"""``python -m persam``: the same command line as the ``persam`` script."""

import sys

from persam.cli.main import script

if __name__ == "__main__":
    sys.exit(script())
