"""Entry point of the ``persam`` command."""

from __future__ import annotations

import argparse
import gc
import sys

from persam import __version__
from persam.cli import app, bench, dreambooth, index, label_studio, mask, models, personalize, segment, video
from persam.cli import eval as evaluate

#: Exit statuses: bad input or options (argparse's own), a bug in persam (BSD's EX_SOFTWARE).
from persam.errors import INTERNAL_ERROR, USAGE_ERROR


def render_error(exc) -> str:
    """One line for a ``PersamError``: its message, after the flags of its ``fields`` the message does not name."""
    from persam.cli.common import flag_of

    message = exc.message or type(exc).__name__
    flags = [f for f in dict.fromkeys(flag_of(name) for name in exc.fields) if f is not None and f not in message]
    return f"{', '.join(flags)}: {message}" if flags else message


def report_internal_error(exc: BaseException) -> None:
    """A bug: "internal error" and the traceback on stderr (never a one-line "fix your input")."""
    import traceback

    print(
        f"persam: internal error (a bug in persam, not a problem with your input): {type(exc).__name__}: {exc}",
        file=sys.stderr,
    )
    traceback.print_exception(exc, file=sys.stderr)
    print("persam: please report it with the traceback above", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persam", description="Personalize Segment Anything with one shot (PerSAM, PerSAM-F)."
    )
    parser.add_argument("--version", action="version", version=f"persam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (segment, personalize, mask, app, index, video, evaluate, bench, models, dreambooth, label_studio):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage errors, 0 after --help)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    from persam.errors import PersamError

    try:
        limit = getattr(args, "max_pixels", None)
        if limit is None:  # the image reader is not imported: ``persam models`` stays free of numpy and Pillow
            return args.func(args)
        from persam.io.images import pixel_limit

        with pixel_limit(limit):
            return args.func(args)
    except PersamError as exc:  # the user can fix it: one line, exit 2
        print(f"persam: error: {render_error(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("persam: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a bug in persam: say so, with the traceback
        report_internal_error(exc)
        return INTERNAL_ERROR


def script() -> int:
    """The ``persam`` script and ``python -m persam``: ``main`` as the whole life of a process.

    When it returns, what the run made (PyTorch's and OpenVINO's modules, the model) is frozen
    (``gc.freeze``): the interpreter's exit then frees it by reference counts alone instead of walking
    it again in its last cycle collections (about 0.3 s of a one-photo ``persam segment``,
    ``benchmarks/cold_start.py``). Only garbage in reference cycles is left to the end of the process;
    every output is written and closed by then. ``main`` itself, which tests call in-process, leaves
    the collector alone. Before ``main``, the C library's allocator is told to keep freed memory for
    reuse (``persam.backends.allocator``).
    """
    from persam.backends.allocator import keep_freed_memory

    keep_freed_memory()
    status = main()
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(script())
