"""Entry point of the ``persam`` command."""

from __future__ import annotations

import argparse
import sys

from persam import __version__
from persam.cli import bench, dreambooth, eval as evaluate, index, models, personalize, segment, video


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="persam", description="Personalize Segment Anything with one shot (PerSAM, PerSAM-F).")
    parser.add_argument("--version", action="version", version=f"persam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (segment, personalize, index, video, evaluate, bench, models, dreambooth):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage errors, 0 after --help)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    from persam.cli.common import user_errors

    try:
        return args.func(args)
    except user_errors() as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"persam: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("persam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
