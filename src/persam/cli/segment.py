"""``persam segment``: find a personalized object in photos; a thin adapter on the job engine.

The command line is parsed into a ``persam.engine.spec.JobSpec`` and run by ``persam.engine.runner.run_job``,
which holds the batch behaviour: every check that needs no model first (``persam.engine.checks``), one run
per output folder, photos under the output folder are not inputs, output names never collide
(``persam.io.naming``), ``manifest.json`` rewritten atomically as photos finish with ``"complete": false``
until the end, and a re-run of the same spec skips the photos already written (``--overwrite`` redoes them).
"""

from __future__ import annotations

import argparse

from persam.cli.common import (
    add_model_options,
    add_quiet_option,
    add_ray_options,
    model_spec,
    progress,
    ray_options,
    summary,
    warn,
)
from persam.cli.references import add_reference_options, concept_from_args, method_from_args
from persam.engine.spec import ExecutorSpec, JobSpec, OutputSpec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a personalized object in new photos",
        description="Learn the object from reference photo(s) and mask(s), or load a saved concept, then write "
        "a mask for each target photo.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="image files or folders (searched recursively)")
    add_reference_options(p)
    p.add_argument("--concept", metavar="FILE", help="a concept saved by `persam personalize` (instead of --ref)")
    p.add_argument(
        "--index",
        metavar="STORE",
        help="segment the photos of an album index (`persam index`: a store folder or URI, "
        "or an .idx file): decoder only",
    )
    p.add_argument(
        "--max-instances", type=int, default=1, metavar="N", help="find up to N instances; writes a label map (1..N)"
    )
    p.add_argument(
        "--detect-absent", action="store_true", help="write an empty mask when the object is not in the photo"
    )
    p.add_argument(
        "--presence-threshold",
        type=float,
        metavar="S",
        help="similarity below which the object is absent (implies --detect-absent)",
    )
    p.add_argument(
        "--format", choices=["png", "coco"], default="png", help="coco: also write annotations.json with RLE masks"
    )
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="photos segmented at once, sharing the CPU threads (default: 2 on a CPU with 2+ cores, else 1); "
        "scores may differ from --workers 1 in the 5th decimal",
    )
    p.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="photos decoded together by each worker, each PerSAM stage one decoder call over them "
        "(default 1: photo by photo; no gain from groups shown on a CPU, they are for GPUs); at most "
        "2 x workers x N photos are held in memory (about 7 MiB each at 1024 px); masks equal photo by "
        "photo within float rounding (IoU >= 0.999)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="segment every photo again (default: skip those a previous run with the same settings wrote to OUT)",
    )
    add_quiet_option(p)
    add_model_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    """The job spec of a ``persam segment`` command line (checked when it runs)."""
    ray = ray_options(args)
    return JobSpec(
        concept=concept_from_args(args),
        output=OutputSpec(args.output, args.format, args.overlay, args.overwrite),
        targets=tuple(args.targets),
        index=args.index,
        method=method_from_args(args),
        model=model_spec(args),
        executor=ExecutorSpec(workers=args.workers, batch=args.batch, ray=ray),
        max_pixels=args.max_pixels,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    from persam.engine.runner import run_job

    result = run_job(spec_from_args(args), warn=warn, progress=progress)
    summary(args, result.summary())
    return result.status
