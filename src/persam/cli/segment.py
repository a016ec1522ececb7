"""``persam segment``: find a personalized object in photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.cli.common import add_model_options, load_model, progress, user_errors, warn
from persam.method.settings import COMPONENTS, PersamSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a personalized object in new photos",
        description="Learn the object from a reference photo and its mask, then write a mask for each target photo.",
    )
    p.add_argument("targets", nargs="+", metavar="TARGET", help="image files or folders (searched recursively)")
    p.add_argument("--ref", required=True, metavar="IMAGE", help="reference photo showing the object")
    p.add_argument("--ref-mask", required=True, metavar="MASK", help="mask of the object in the reference (nonzero = object)")
    p.add_argument("--label", type=int, help="use only this value of a multi-label reference mask")
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: fit the two mask-scale weights (about a second)")
    p.add_argument("--without", action="append", default=[], choices=COMPONENTS, help="switch a component off (ablation); repeatable")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.io import find_images, load_image, save_mask, save_overlay

    errors = user_errors()
    targets = find_images(args.targets)
    if not targets:
        raise ValueError("no image files among the targets; pass .jpg/.png files or folders holding them")
    model = load_model(args)
    settings = PersamSettings().without(*args.without)
    concept = model.personalize(args.ref, args.ref_mask, finetune=args.finetune, label=args.label, settings=settings)
    out = Path(args.output)
    failed = 0
    for path, stem in progress(targets, len(targets), "segment"):
        try:
            image = load_image(path)
            result = concept.segment(image)
        except errors as exc:
            failed += 1
            warn(f"skipped {path}: {exc}")
            continue
        save_mask(out / stem.with_suffix(".png"), result.mask)
        if args.overlay:
            save_overlay(out / f"{stem}_overlay.jpg", image, result.mask)
    if failed:
        warn(f"{failed} of {len(targets)} targets skipped; the others were written to {out}")
    return 1 if failed else 0
