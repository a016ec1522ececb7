"""Shared pieces of the sub-commands: model options, errors, progress."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

from persam.jobs.errors import USER_ERRORS, user_errors  # noqa: F401  (errors reported in one line, exit 2)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --device, --precision, --random-weights."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="vit_t", help="backend: vit_t (default, MobileSAM), vit_b, vit_l, vit_h, litemedsam")
    group.add_argument("--checkpoint", metavar="PATH", help="local weights file (official key layout) instead of the download")
    group.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, then mps, then cpu")
    group.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 image encoder (about 2x faster on CPUs with AMX/AVX512-BF16 and on recent GPUs); the decoder stays fp32")
    group.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)


def load_model(args: argparse.Namespace):
    """The session model from the parsed model options."""
    from persam.session.photo import load

    return load(
        args.model,
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        random_weights=getattr(args, "random_weights", False),
    )


def progress(items: Iterable[T], total: int, desc: str, unit: str = "img") -> Iterator[T]:
    """A tqdm bar on a terminal; the plain iterable otherwise."""
    if not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True)


def warn(message: str) -> None:
    """One line on stderr."""
    print(f"persam: {message}", file=sys.stderr)


def _finite(value: object) -> object:
    """``value`` with NaN / infinite floats replaced by None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented strict JSON (NaN -> null), atomically, creating the folder."""
    from persam.io import atomic_write_text

    atomic_write_text(path, json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
