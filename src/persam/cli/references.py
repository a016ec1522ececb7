"""Reference options shared by the commands: how the concept is learned (or loaded), and photo-pixel prompts (X,Y points, X0,Y0,X1,Y1 boxes)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from persam.errors import MissingInputError, OptionsError, PersamError
from persam.method.settings import COMPONENTS, PersamSettings

PRIORS = ("similarity", "part-aware", "matcher")


def part_range(text: str) -> tuple[int, int]:
    """``MIN..MAX`` (or one number) -> (min, max) part counts; argparse type."""
    lo, sep, hi = text.partition("..")
    try:
        value = (int(lo), int(hi) if sep else int(lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN..MAX (e.g. 1..5)") from None
    if value[0] < 1 or value[1] < value[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= MAX (e.g. 1..5)")
    return value


def add_prior_options(p: argparse.ArgumentParser) -> None:
    """--prior similarity|part-aware and --parts MIN..MAX (segment, personalize, eval perseg)."""
    p.add_argument(
        "--prior",
        choices=PRIORS,
        default="similarity",
        help="similarity: PerSAM's one point (default); part-aware: P2SAM's parts, best of --parts by optimal "
        "transport; matcher: Matcher's DINOv2 patch matching and merged SAM masks",
    )
    p.add_argument(
        "--parts",
        type=part_range,
        metavar="MIN..MAX",
        help="part counts the part-aware prior tries (default 1..5, the published setting)",
    )


def prior_options(args: argparse.Namespace) -> dict:
    """``personalize`` keywords for --prior/--parts; --parts without --prior part-aware is refused."""
    if args.parts is not None and args.prior != "part-aware":
        raise OptionsError("--parts applies to the part-aware prior only; add --prior part-aware or drop --parts")
    if args.prior in ("part-aware", "matcher") and getattr(args, "max_instances", 1) > 1:
        raise OptionsError(
            "--max-instances finds several instances with the similarity prior only; drop it or use --prior similarity"
        )
    return {"prior": args.prior} if args.parts is None else {"prior": args.prior, "parts": args.parts}


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """--ref/--ref-mask (repeatable, or folders of pairs), --label, --finetune, --without."""
    p.add_argument(
        "--ref", action="append", default=[], metavar="IMAGE", help="reference photo (repeatable), or a folder of them"
    )
    p.add_argument(
        "--ref-mask",
        action="append",
        default=[],
        metavar="MASK",
        help="its mask, nonzero = object (one per --ref), or a folder of masks named like the photos",
    )
    add_prompt_options(p)
    p.add_argument("--label", type=int, help="use only this value of multi-label reference masks")
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: fit the two mask-scale weights (about a second)")
    p.add_argument(
        "--without",
        action="append",
        default=[],
        choices=COMPONENTS,
        help="switch a component off (ablation); repeatable",
    )
    add_prior_options(p)


def _numbers(text: str, count: int, what: str, example: str) -> tuple[float, ...]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise OptionsError(f"{what} {text!r} is malformed; write {example} in photo pixels (x right, y down)")
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
    xy = [parse_point(p, f"{prefix}point") for p in points] + [
        parse_point(p, f"{prefix}negative-point") for p in negatives
    ]
    return {
        "points_xy": xy or None,
        "point_labels": [1] * len(points) + [0] * len(negatives) if xy else None,
        "box_xyxy": None if box is None else parse_box(box, f"{prefix}box"),
    }


def _object_id(text: str, option: str, example: str) -> tuple[int, str]:
    oid, sep, rest = text.partition(":")
    if not sep or not oid.strip().isdigit() or not 1 <= int(oid) <= 255:
        raise OptionsError(
            f"{option} {text!r} is malformed; write ID:{example} with an object id 1..255, e.g. 1:{example}"
        )
    return int(oid), rest


def object_prompts_from_args(points: list[str], negatives: list[str], boxes: list[str]) -> dict[int, dict]:
    """Per-object ``mask_from_prompts`` keywords from ``ID:X,Y`` / ``ID:X0,Y0,X1,Y1`` option strings ({} when none)."""
    objects: dict[int, dict] = {}

    def entry(oid: int) -> dict:
        return objects.setdefault(oid, {"points_xy": [], "point_labels": [], "box_xyxy": None})

    for texts, label, option in ((points, 1, "--point"), (negatives, 0, "--negative-point")):
        for text in texts:
            oid, rest = _object_id(text, option, "X,Y")
            entry(oid)["points_xy"].append(parse_point(rest, option))
            entry(oid)["point_labels"].append(label)
    for text in boxes:
        oid, rest = _object_id(text, "--box", "X0,Y0,X1,Y1")
        if entry(oid)["box_xyxy"] is not None:
            raise OptionsError(f"object {oid} has two --box; pass one box per object")
        entry(oid)["box_xyxy"] = parse_box(rest, "--box")
    for kwargs in objects.values():
        if not kwargs["points_xy"]:
            kwargs["points_xy"] = kwargs["point_labels"] = None
    return objects


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    """--ref-point, --ref-negative-point, --ref-box: SAM makes the reference mask instead of --ref-mask."""
    p.add_argument(
        "--ref-point",
        action="append",
        default=[],
        metavar="X,Y",
        help="instead of --ref-mask: a click on the object in the (single) --ref photo, photo pixels (repeatable)",
    )
    p.add_argument(
        "--ref-negative-point",
        action="append",
        default=[],
        metavar="X,Y",
        help="with --ref-point/--ref-box: a click on the background (repeatable)",
    )
    p.add_argument(
        "--ref-box",
        metavar="X0,Y0,X1,Y1",
        help="instead of --ref-mask: a box around the object in the --ref photo (SAM's single mask)",
    )


def reference_prompts(args: argparse.Namespace, ref: str | None = None) -> dict:
    """``PersamModel.personalize`` keywords (box, points, point_labels) from the prompt options; {} without them.

    With ``ref`` (the photo), the prompts are also checked against its size.
    """
    kwargs = prompts_from_args(args.ref_point, args.ref_negative_point, args.ref_box, prefix="--ref-")
    if not kwargs:
        return {}
    if ref is not None:
        from persam.io import load_image
        from persam.session.prompts import Prompts

        try:
            Prompts.checked(load_image(ref).shape[:2], **kwargs)
        except PersamError as exc:
            raise exc.reworded(f"{ref}: {exc}") from None
    return {"box": kwargs["box_xyxy"], "points": kwargs["points_xy"], "point_labels": kwargs["point_labels"]}


def prompt_reference(args: argparse.Namespace) -> tuple[str, dict] | None:
    """(reference photo, personalize keywords) when the prompt options are given, checked; else None."""
    given = [
        name
        for name, value in (
            ("--ref-point", args.ref_point),
            ("--ref-negative-point", args.ref_negative_point),
            ("--ref-box", args.ref_box),
        )
        if value
    ]
    if not given:
        return None
    refs = args.ref if isinstance(args.ref, list) else [args.ref]
    if getattr(args, "ref_mask", None):
        raise OptionsError(
            f"pass either --ref-mask or {'/'.join(given)}, not both (SAM makes the mask from the prompts)"
        )
    if len(refs) != 1 or Path(refs[0]).is_dir():
        raise OptionsError(
            f"{'/'.join(given)} mark the object in one --ref photo, got {len(refs)} --ref "
            f"{'folder' if refs and Path(refs[0]).is_dir() else 'values'}; pass one photo, or masks with --ref-mask"
        )
    if getattr(args, "label", None) is not None:
        raise OptionsError("--label applies to --ref-mask files; drop it with --ref-point/--ref-box")
    if args.ref_negative_point and not args.ref_point and not args.ref_box:
        raise OptionsError("--ref-negative-point alone marks no object; add --ref-point X,Y or --ref-box X0,Y0,X1,Y1")
    return refs[0], reference_prompts(args, refs[0])


def reference_pairs(refs: list[str], masks: list[str]) -> tuple[list[Path], list[Path]]:
    """Expand --ref/--ref-mask into matching lists (folders are paired by file stem)."""
    from persam.io import find_images

    if not refs:
        raise OptionsError(
            "no reference given; pass --ref IMAGE with --ref-mask MASK, --ref-point X,Y or --ref-box X0,Y0,X1,Y1 (or --concept FILE)"
        )
    if len(refs) != len(masks):
        raise OptionsError(
            f"got {len(refs)} --ref and {len(masks)} --ref-mask; pass one mask per reference photo (or, for one photo, --ref-point X,Y / --ref-box X0,Y0,X1,Y1)"
        )
    images, mask_paths = [], []
    for ref, mask in zip(refs, masks):
        ref_p, mask_p = Path(ref), Path(mask)
        if ref_p.is_dir():
            by_stem = {stem.as_posix(): p for p, stem in find_images([mask_p])} if mask_p.is_dir() else {}
            for img, stem in find_images([ref_p]):
                if stem.as_posix() not in by_stem:
                    raise MissingInputError(
                        f"{img}: no mask named {stem}.* in {mask_p}; put each photo's mask there under the same name"
                    )
                images.append(img)
                mask_paths.append(by_stem[stem.as_posix()])
        else:
            images.append(ref_p)
            mask_paths.append(mask_p)
    return images, mask_paths


def check_reference_options(args: argparse.Namespace) -> None:
    """Refuse (exit 2) the learning options given with ``--concept`` (a concept file is already learned)."""
    if not getattr(args, "concept", None):
        prompt_reference(args)  # bad coordinates fail here, before the model loads
        return
    given = [
        name
        for name, value in (
            ("--ref", args.ref),
            ("--ref-mask", args.ref_mask),
            ("--label", args.label is not None),
            ("--finetune", args.finetune),
            ("--without", args.without),
            ("--ref-point", args.ref_point),
            ("--ref-negative-point", args.ref_negative_point),
            ("--ref-box", args.ref_box),
            ("--prior", args.prior != "similarity"),
            ("--parts", args.parts is not None),
        )
        if value
    ]
    if given:
        raise OptionsError(
            f"{', '.join(given)} only apply when learning from --ref/--ref-mask; {args.concept} is already "
            f"learned: drop {', '.join(given)} or pass --ref/--ref-mask instead of --concept"
        )


def build_concept(args: argparse.Namespace, model):
    """The concept from --concept, or learned from the references."""
    if getattr(args, "concept", None):
        from persam.session.concept_file import load_concept

        concept = load_concept(args.concept, model)
    elif (prompted := prompt_reference(args)) is not None:
        ref, prompts = prompted
        settings = PersamSettings().without(*args.without)
        concept = model.personalize(ref, finetune=args.finetune, settings=settings, **prompts, **prior_options(args))
    else:
        images, masks = reference_pairs(args.ref, args.ref_mask)
        settings = PersamSettings().without(*args.without)
        concept = model.personalize(
            images, masks, finetune=args.finetune, label=args.label, settings=settings, **prior_options(args)
        )
    if getattr(args, "presence_threshold", None) is not None:
        concept.presence_threshold = args.presence_threshold
    return concept
