"""``persam mask``: SAM's own mask from clicks or a box (e.g. to make a reference mask)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from persam.cli.common import add_model_options, load_model


def _numbers(text: str, count: int, what: str, example: str) -> tuple[float, ...]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} {text!r} is malformed; write {example} in photo pixels (x right, y down)")
    return values


def parse_point(text: str, what: str = "point") -> tuple[float, float]:
    """``"X,Y"`` -> (x, y) photo pixels; ValueError naming the fix when malformed."""
    x, y = _numbers(text, 2, what, "X,Y, e.g. 320,240")
    return x, y


def parse_box(text: str, what: str = "box") -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` -> XYXY photo pixels; ValueError naming the fix when malformed."""
    x0, y0, x1, y1 = _numbers(text, 4, what, "X0,Y0,X1,Y1 (top-left, bottom-right corners), e.g. 40,30,300,220")
    return x0, y0, x1, y1


def prompts_from_args(points: list[str], negatives: list[str], box: str | None, prefix: str = "--") -> dict:
    """Keyword arguments of ``PersamModel.mask_from_prompts`` from option strings (None when no prompt)."""
    if not points and not negatives and box is None:
        return {}
    xy = [parse_point(p, f"{prefix}point") for p in points] + [parse_point(p, f"{prefix}negative-point") for p in negatives]
    return {
        "points_xy": xy or None,
        "point_labels": [1] * len(points) + [0] * len(negatives) if xy else None,
        "box_xyxy": None if box is None else parse_box(box, f"{prefix}box"),
    }


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
    p.add_argument("--negative-point", action="append", default=[], metavar="X,Y", help="a click on the background (repeatable)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object (top-left, bottom-right corners)")
    p.add_argument("-o", "--output", required=True, metavar="MASK.png", help="mask to write (PNG, 255 = object)")
    p.add_argument("--overlay", action="store_true", help="also write <MASK>_overlay.jpg beside the mask")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.io import load_image, save_mask, save_overlay

    prompts = prompts_from_args(args.point, args.negative_point, args.box)
    if not prompts:
        raise ValueError("no prompt: pass --point X,Y (repeatable) or --box X0,Y0,X1,Y1")
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"{output}: the mask is written as PNG; name it with .png")
    from persam.session.prompts import Prompts

    pixels = load_image(args.image)
    try:
        Prompts.checked(pixels.shape[:2], **prompts)  # before loading the model: fail fast
    except ValueError as exc:
        raise ValueError(f"{args.image}: {exc}") from None
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
