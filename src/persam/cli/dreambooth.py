"""``persam dreambooth``: PerSAM-assisted DreamBooth (prepare masked data, train)."""

from __future__ import annotations

import argparse
import sys

from persam.cli.common import (
    add_model_options,
    add_quiet_option,
    check_inputs_exist,
    check_output_folder,
    load_model,
    progress,
    summary,
    warn,
)
from persam.cli.references import add_prompt_options, build_concept, checked_learning
from persam.errors import OptionsError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dreambooth",
        help="DreamBooth fine-tuning of Stable Diffusion on the subject only (masked loss)",
        description="Prepare foreground masks of the subject in the training photos, then fine-tune a Stable "
        "Diffusion UNet with a loss over the subject only.",
    )
    dsub = p.add_subparsers(dest="dreambooth_command", required=True, metavar="STEP")

    prep = dsub.add_parser(
        "prepare",
        help="segment the subject in the training photos (images, masks, metadata.jsonl)",
        description="Learn the subject from a reference photo and mask, segment it in every photo and write an "
        "imagefolder data set with masks.",
    )
    prep.add_argument("photos", nargs="+", metavar="PHOTO", help="training photos or folders (searched recursively)")
    prep.add_argument("--ref", required=True, metavar="IMAGE", help="reference photo of the subject")
    prep.add_argument("--ref-mask", metavar="MASK", help="its mask, nonzero = subject (or --ref-point / --ref-box)")
    add_prompt_options(prep)
    prep.add_argument(
        "--finetune", action="store_true", help="PerSAM-F: fit the two mask-scale weights (about a second)"
    )
    prep.add_argument(
        "--prompt", default="a photo of sks object", help='the "text" of every row (default: "a photo of sks object")'
    )
    prep.add_argument(
        "--force",
        action="store_true",
        help="keep photos whose mask is absent or implausible (still listed in rejected.json)",
    )
    prep.add_argument("-o", "--output", required=True, metavar="DATA", help="data folder to write")
    add_model_options(prep)
    add_quiet_option(prep)
    prep.set_defaults(func=run_prepare)

    tr = dsub.add_parser(
        "train",
        help="fine-tune a Stable Diffusion UNet on the prepared data (needs persam[dreambooth])",
        description="DreamBooth on diffusers + accelerate with the foreground-only loss; resumes from "
        "OUT/checkpoints when rerun.",
    )
    tr.add_argument("data", metavar="DATA", help="folder written by `persam dreambooth prepare`")
    tr.add_argument(
        "--base-model",
        required=True,
        metavar="PATH_OR_NAME",
        help="diffusers Stable Diffusion folder (or hub name) to fine-tune",
    )
    tr.add_argument("--instance-prompt", required=True, help='e.g. "a photo of sks dog"')
    tr.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (checkpoints/, pipeline/)")
    tr.add_argument("--class-data", metavar="DIR", help="class images for prior preservation")
    tr.add_argument("--class-prompt", help='e.g. "a photo of a dog" (with --class-data)')
    tr.add_argument(
        "--prior-weight", type=float, help="weight of the prior-preservation loss (with --class-data; default 1.0)"
    )
    tr.add_argument("--steps", type=int, default=400, help="total optimiser steps (default 400)")
    tr.add_argument("--lr", type=float, default=5e-6, help="learning rate (default 5e-6)")
    tr.add_argument(
        "--mixed-precision",
        choices=["no", "fp16", "bf16"],
        default="no",
        help="accelerate mixed precision (default no)",
    )
    tr.add_argument("--resolution", type=int, default=512, help="square training size in pixels (default 512)")
    tr.add_argument("--batch-size", type=int, default=1, help="instance photos per step (default 1)")
    tr.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    tr.add_argument(
        "--dilate", type=int, default=1, help="grow the latent foreground by this many latent pixels (default 1)"
    )
    tr.add_argument(
        "--checkpoint-every",
        type=int,
        default=200,
        metavar="N",
        help="save the training state every N steps and at the end (default 200)",
    )
    tr.add_argument(
        "--keep-checkpoints", type=int, default=1, metavar="K", help="keep the last K checkpoints (default 1)"
    )
    tr.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for UNet activation memory")
    tr.set_defaults(func=run_train)


def run_prepare(args: argparse.Namespace) -> int:
    from persam.jobs.dreambooth.prepare import prepare_dataset

    check_output_folder(args.output)
    check_inputs_exist([args.ref, args.ref_mask, args.checkpoint, *args.photos])
    checked_learning(args)  # before the model loads
    model = load_model(args)
    concept = build_concept(args, model)
    report = prepare_dataset(
        concept,
        args.photos,
        args.output,
        prompt=args.prompt,
        force=args.force,
        on_error=lambda path, exc: warn(f"rejected {path}: {exc}"),
        progress=progress,
    )
    for entry in report.rejected:
        verb = "kept (--force)" if entry["included"] else "rejected"
        warn(f"{verb} {entry['photo']}: {entry['reason']}")
    summary(
        args,
        f"persam dreambooth prepare: {len(report.kept)} photos written to {report.root} "
        f"({len(report.rejected)} flagged, see rejected.json)",
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from persam.jobs.dreambooth.train import MissingExtrasError, TrainConfig, train

    check_output_folder(args.output)
    if args.prior_weight is not None and args.class_data is None:
        raise OptionsError(
            "--prior-weight has no effect without --class-data DIR (no prior-preservation loss); drop it or "
            "pass --class-data and --class-prompt"
        )
    config = TrainConfig(
        data=args.data,
        model=args.base_model,
        instance_prompt=args.instance_prompt,
        output=args.output,
        class_data=args.class_data,
        class_prompt=args.class_prompt,
        prior_weight=1.0 if args.prior_weight is None else args.prior_weight,
        steps=args.steps,
        lr=args.lr,
        mixed_precision=args.mixed_precision,
        resolution=args.resolution,
        batch_size=args.batch_size,
        seed=args.seed,
        dilate=args.dilate,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    try:
        train(config, progress=progress)
    except MissingExtrasError as exc:
        print(f"persam: error: {exc}", file=sys.stderr)
        return 2
    return 0
