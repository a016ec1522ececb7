"""Shared pieces of the sub-commands: model options, errors, progress."""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Errors a user can fix: reported in one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, PermissionError)


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the checkpoint errors (imported lazily)."""
    from persam.backends.checkpoints import CheckpointError

    return USER_ERRORS + (CheckpointError,)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --device, --precision, --runtime, --random-weights."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="vit_t", help="backend: vit_t (default, MobileSAM), vit_b, vit_l, vit_h, litemedsam")
    group.add_argument("--checkpoint", metavar="PATH", help="local weights file (official key layout) instead of the download")
    group.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, then mps, then cpu")
    group.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 image encoder (about 2x faster on CPUs with AMX/AVX512-BF16 and on recent GPUs); the decoder stays fp32")
    group.add_argument("--runtime", choices=["torch", "openvino", "onnxruntime"], default="torch", help="run the image encoder through PyTorch (default) or an inference runtime on the CPU (converted once per checkpoint and cached; pip install 'persam[openvino]' or 'persam[onnx]')")
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
        runtime=getattr(args, "runtime", "torch"),
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
