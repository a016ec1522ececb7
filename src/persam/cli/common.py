"""Shared pieces of the sub-commands: model options, errors, progress."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from persam.errors import OptionsError, PersamError

T = TypeVar("T")


#: Job-spec fields (``persam.errors.PersamError.field``) -> their command-line flags.
FLAGS = {
    "checkpoint": "--checkpoint",
    "model": "--model",
    "device": "--device",
    "precision": "--precision",
    "runtime": "--runtime",
    "random_weights": "--random-weights",
    "max_pixels": "--max-pixels",
    "finetune": "--finetune",
    "without": "--without",
    "prior": "--prior",
    "parts": "--parts",
    "label": "--label",
    "max_instances": "--max-instances",
    "detect_absent": "--detect-absent",
    "presence_threshold": "--presence-threshold",
    "format": "--format",
    "overlay": "--overlay",
    "workers": "--workers",
    "batch": "--batch",
    "overwrite": "--overwrite",
    "concept": "--concept",
    "index": "--index",
    "references": "--ref",
    "masks": "--ref-mask",
    "box": "--ref-box",
    "points": "--ref-point",
    "output": "-o",
    "ray_workers": "--ray-workers",
    "ray_gpus_per_worker": "--ray-gpus-per-worker",
    "ray_batch_size": "--ray-batch-size",
    "ray": "--ray",
    "dtype": "--dtype",
    "url": "--url",
    "api_key": "--api-key",
    "project": "--project",
}


def flag_of(field: str | None) -> str | None:
    """The command-line flag of a job-spec field, or None (no field, or one without a flag)."""
    return None if field is None else FLAGS.get(field)


def model_name(value: str) -> str:
    """argparse type of ``--model``: a registered backend (the test-only ones are accepted, not offered)."""
    from persam.backends.registry import get_spec

    try:
        return get_spec(value).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_name(value: str) -> str:
    """argparse type of ``--device``: cpu, cuda, cuda:N or mps (whether it exists is checked on loading)."""
    from persam.backends.registry import check_device_name

    try:
        return check_device_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DEFAULT_MODEL = "vit_t"


def model_help() -> str:
    """``--model`` help naming the offered backends."""
    from persam.backends.registry import offered_names

    return f"backend: {', '.join(offered_names())} (default vit_t, MobileSAM; see `persam models`)"


DEVICE_HELP = "cpu, cuda, cuda:N (GPU index) or mps; default: cuda, then mps, then cpu"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --device, --precision, --runtime, --random-weights (defaults None: a given
    option is seen)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", type=model_name, metavar="NAME", help=model_help())
    group.add_argument(
        "--checkpoint", metavar="PATH", help="local weights file (official key layout) instead of the download"
    )
    group.add_argument("--device", type=device_name, metavar="DEVICE", help=DEVICE_HELP)
    group.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="bf16 image encoder (about 2x faster on CPUs with AMX/AVX512-BF16 and on recent GPUs; default "
        "fp32); the decoder stays fp32 (SAM 2 with --runtime openvino: its two skip convolutions run with the encoder)",
    )
    group.add_argument(
        "--runtime",
        choices=["torch", "openvino", "onnxruntime"],
        help="run the image encoder through PyTorch (default) or an inference runtime on the CPU (converted "
        "once per checkpoint and cached; pip install 'persam[openvino]' or 'persam[onnx]')",
    )
    group.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-pixels",
        type=pixel_limit,
        metavar="N",
        help="largest photo (width x height) read, a guard against decompression bombs "
        "(default 64000000; 0 = no limit)",
    )


def pixel_limit(text: str) -> int:
    """``--max-pixels``: a whole number of pixels, 0 for no limit."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-pixels takes a whole number of pixels (0 = no limit), got {text!r}")
    return value


def load_model(args: argparse.Namespace):
    """The session model from the parsed model options (random weights seeded with 0: a re-run may resume)."""
    return model_spec(args).load()


def given_model_options(args: argparse.Namespace) -> list[str]:
    """The model options given on the command line (their defaults are None / False)."""
    names = ("model", "checkpoint", "device", "precision", "runtime", "random_weights")
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) not in (None, False)]


def refuse(options: list[str], reason: str) -> None:
    """ValueError (exit 2) naming the ``options`` that would be ignored, unless there are none."""
    if options:
        raise OptionsError(
            f"{' and '.join(options)} {'has' if len(options) == 1 else 'have'} no effect {reason}; drop "
            f"{'it' if len(options) == 1 else 'them'}"
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
    from persam.io.atomic import atomic_write_json

    atomic_write_json(path, _finite(data))


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet: no summary line at the end (warnings and errors still go to stderr)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary line at the end")


def summary(args: argparse.Namespace, line: str) -> None:
    """The summary line of a batch command on stdout, unless --quiet."""
    if not getattr(args, "quiet", False):
        print(line, flush=True)


def check_output_folder(path: str | os.PathLike, option: str = "-o") -> Path:
    """``path`` as the output folder of ``option``, checked before any model loads (the rule is
    ``persam.engine.checks``'s; the message names the option it was given with)."""
    from persam.engine.checks import check_output_folder as check

    try:
        return check(path, field=None)
    except PersamError as exc:
        raise exc.reworded(f"{option} {exc}") from None


def check_output_file(path: str | os.PathLike, option: str = "-o") -> Path:
    """``path`` as an output file: refused when it is a folder or its folder cannot be made/written."""

    file = Path(path)
    if file.is_dir():
        raise OptionsError(f"{option} {file}: is a folder; pass a file path")
    check_output_folder(file.parent, option)
    return file


def check_inputs_exist(paths: Iterable[str | os.PathLike | None]) -> None:
    """``MissingInputError`` naming the first of ``paths`` that does not exist (None entries are ignored)."""
    from persam.engine.checks import check_inputs_exist as check

    check((path, None) for path in paths)


def require_extra(module: str, needed_by: str) -> None:
    """``MissingExtraError`` with the install command when ``module`` (an optional dependency) is missing."""
    from persam.engine.checks import require_extra as require

    require(module, needed_by)


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS] and the actor pool's options (``persam.jobs.ray_common``); needs persam[ray]."""
    group = parser.add_argument_group("Ray (persam[ray])")
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run as a Ray Data pipeline: alone, on a local Ray runtime; with an address "
        "(auto, ray://HOST:10001), on that cluster; put it after the photos, or write --ray=ADDRESS",
    )
    group.add_argument(
        "--ray-workers",
        type=int,
        metavar="N",
        help="model actors (default: one per GPU, or one per CPU but one on a CPU-only cluster)",
    )
    group.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs per model actor (default 1 when the cluster has GPUs, else 0)",
    )
    group.add_argument(
        "--ray-batch-size",
        type=int,
        metavar="N",
        help="photos per batch handed to an actor (default 8 with GPUs, 4 without)",
    )


def ray_options(args: argparse.Namespace):
    """The Ray options of ``args`` (checked; exit 2 on a bad value), or None without --ray."""
    names = {
        "--ray-workers": args.ray_workers,
        "--ray-gpus-per-worker": args.ray_gpus_per_worker,
        "--ray-batch-size": args.ray_batch_size,
    }
    if args.ray is None:
        refuse([n for n, v in names.items() if v is not None], "without --ray")
        return None
    from persam.engine.checks import check_ray
    from persam.jobs.ray_common import RayOptions

    return check_ray(RayOptions(args.ray or None, args.ray_workers, args.ray_gpus_per_worker, args.ray_batch_size))


def model_spec(args: argparse.Namespace):
    """The model options as a ``ModelSpec`` (checked), loaded here or by an actor elsewhere."""
    from persam.engine.checks import check_model
    from persam.session.model_spec import ModelSpec

    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
    return check_model(
        ModelSpec(
            args.model or DEFAULT_MODEL,
            checkpoint,
            args.device,
            getattr(args, "precision", None) or "fp32",
            bool(getattr(args, "random_weights", False)),
            getattr(args, "runtime", None) or "torch",
        )
    )
