"""Entry point of the ``persam`` command."""

from __future__ import annotations

import argparse
import sys

from persam import __version__
from persam.cli import app, bench, dreambooth, index, mask, models, personalize, segment, video
from persam.cli import eval as evaluate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persam", description="Personalize Segment Anything with one shot (PerSAM, PerSAM-F)."
    )
    parser.add_argument("--version", action="version", version=f"persam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (segment, personalize, mask, app, index, video, evaluate, bench, models, dreambooth):
        module.add_parser(sub)
    return parser


def set_pixel_limit(limit: int | None):
    """Apply ``--max-pixels`` (0 = no limit) for one command; returns what puts the previous limit back.

    The image reader is imported only when the option is given, so that
    ``persam models`` stays free of numpy and Pillow.
    """
    if limit is None:
        return lambda: None
    from persam.io.images import max_pixels, set_max_pixels

    previous = max_pixels()
    set_max_pixels(limit or None)
    return lambda: set_max_pixels(previous)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage errors, 0 after --help)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    from persam.cli.common import user_errors

    restore = set_pixel_limit(getattr(args, "max_pixels", None))
    try:
        return args.func(args)
    except user_errors() as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"persam: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("persam: interrupted", file=sys.stderr)
        return 130
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
