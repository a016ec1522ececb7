"""The ``persam`` command line (files, progress bars, exit codes)."""
