"""``persam mask``: SAM's own mask from clicks or a box (e.g. to make a reference mask)."""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.cli.common import add_model_options, load_model
from persam.cli.references import prompts_from_args
from persam.errors import OptionsError, PersamError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mask",
        help="SAM's mask from clicks or a box on one photo (e.g. a reference mask)",
        description="Run SAM on one photo with point and/or box prompts and write the mask. "
        "Coordinates are photo pixels, x right, y down. A box gives SAM's single mask; points alone "
        "give the best of SAM's three masks (by predicted IoU); a box and points together are allowed.",
    )
    p.add_argument("image", metavar="IMAGE", help="the photo")
    p.add_argument("--point", action="append", default=[], metavar="X,Y", help="a click on the object (repeatable)")
    p.add_argument(
        "--negative-point", action="append", default=[], metavar="X,Y", help="a click on the background (repeatable)"
    )
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object (top-left, bottom-right corners)")
    p.add_argument("-o", "--output", required=True, metavar="MASK.png", help="mask to write (PNG, 255 = object)")
    p.add_argument("--overlay", action="store_true", help="also write <MASK>_overlay.jpg beside the mask")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.io import load_image, save_mask, save_overlay

    prompts = prompts_from_args(args.point, args.negative_point, args.box)
    if not prompts:
        raise OptionsError("no prompt: pass --point X,Y (repeatable) or --box X0,Y0,X1,Y1")
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise OptionsError(f"{output}: the mask is written as PNG; name it with .png")
    from persam.session.prompts import Prompts

    pixels = load_image(args.image)
    try:
        Prompts.checked(pixels.shape[:2], **prompts)  # before loading the model: fail fast
    except PersamError as exc:
        raise exc.reworded(f"{args.image}: {exc}") from None
    model = load_model(args)
    result = model.mask_from_prompts(pixels, **prompts)
    save_mask(output, result.mask)
    line = f"wrote {output}: {int(result.mask.sum())} pixels, predicted IoU {result.score:.4f}"
    if args.overlay:
        overlay_path = output.with_name(f"{output.stem}_overlay.jpg")
        save_overlay(overlay_path, pixels, result.mask)
        line += f"; overlay {overlay_path}"
    print(line)
    return 0
