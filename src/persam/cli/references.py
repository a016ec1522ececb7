"""Reference options shared by the commands: how the concept is learned (or loaded), and photo-pixel
prompts (X,Y points, X0,Y0,X1,Y1 boxes), turned into the job spec's ``References`` and ``MethodSpec``."""

from __future__ import annotations

import argparse
import math

from persam.engine.checks import choose_concept
from persam.engine.spec import ConceptFile, MethodSpec, References
from persam.errors import OptionsError
from persam.session.options import COMPONENTS, PRIORS, check_prior


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


def prior_options(args: argparse.Namespace, finetune: bool = False) -> dict:
    """``personalize`` keywords for --prior/--parts, checked (``persam.session.options.check_prior``)."""
    return {"prior": args.prior, "parts": check_prior(args.prior, args.parts, finetune)}


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


def references_from_args(args: argparse.Namespace) -> References:
    """The reference options (--ref, --ref-mask, --ref-point, --ref-negative-point, --ref-box, --label)."""
    refs = args.ref if isinstance(args.ref, list) else [args.ref] if args.ref else []
    masks = getattr(args, "ref_mask", None) or []
    masks = masks if isinstance(masks, list) else [masks]
    prompts = prompts_from_args(args.ref_point, args.ref_negative_point, args.ref_box, prefix="--ref-")
    points = tuple(tuple(p) for p in prompts.get("points_xy") or ())
    return References(
        photos=tuple(str(r) for r in refs),
        masks=tuple(str(m) for m in masks),
        box=prompts.get("box_xyxy"),
        points=points,
        point_labels=tuple(prompts.get("point_labels") or ()) if points else (),
        label=getattr(args, "label", None),
    )


def method_from_args(args: argparse.Namespace) -> MethodSpec:
    """The method options (--finetune, --without, --prior, --parts, --max-instances, --detect-absent,
    --presence-threshold); those a command lacks take their defaults."""
    return MethodSpec(
        finetune=bool(getattr(args, "finetune", False)),
        without=tuple(getattr(args, "without", ()) or ()),
        prior=getattr(args, "prior", "similarity"),
        parts=getattr(args, "parts", None),
        max_instances=getattr(args, "max_instances", 1),
        detect_absent=bool(getattr(args, "detect_absent", False)),
        presence_threshold=getattr(args, "presence_threshold", None),
    )


def concept_from_args(args: argparse.Namespace) -> References | ConceptFile:
    """Where the concept comes from: --concept, or the reference options (both: refused)."""
    return choose_concept(getattr(args, "concept", None), references_from_args(args))


def checked_learning(args: argparse.Namespace) -> tuple[References | ConceptFile, MethodSpec]:
    """(concept source, method options) of ``args``, checked before any model loads."""
    from persam.engine.checks import check_concept

    source = concept_from_args(args)
    return source, check_concept(source, method_from_args(args))


def build_concept(args: argparse.Namespace, model):
    """The concept from --concept, or learned from the references with every method option (checked)."""
    from persam.engine.concept import build_concept as build

    return build(*checked_learning(args), model)
