"""Reference options shared by ``segment`` and ``personalize``: how the concept is learned (or loaded)."""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.method.settings import COMPONENTS, PersamSettings

PRIORS = ("similarity", "part-aware")


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
    p.add_argument("--prior", choices=PRIORS, default="similarity",
                   help="similarity: PerSAM's one point (default); part-aware: P2SAM's parts, best of --parts by optimal transport")
    p.add_argument("--parts", type=part_range, metavar="MIN..MAX",
                   help="part counts the part-aware prior tries (default 1..5, the published setting)")


def prior_options(args: argparse.Namespace) -> dict:
    """``personalize`` keywords for --prior/--parts; --parts without --prior part-aware is refused."""
    if args.parts is not None and args.prior != "part-aware":
        raise ValueError("--parts applies to the part-aware prior only; add --prior part-aware or drop --parts")
    if args.prior == "part-aware" and getattr(args, "max_instances", 1) > 1:
        raise ValueError("--max-instances finds several instances with the similarity prior only; drop it or use --prior similarity")
    return {"prior": args.prior} if args.parts is None else {"prior": args.prior, "parts": args.parts}


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """--ref/--ref-mask (repeatable, or folders of pairs), --label, --finetune, --without."""
    p.add_argument("--ref", action="append", default=[], metavar="IMAGE", help="reference photo (repeatable), or a folder of them")
    p.add_argument("--ref-mask", action="append", default=[], metavar="MASK", help="its mask, nonzero = object (one per --ref), or a folder of masks named like the photos")
    p.add_argument("--label", type=int, help="use only this value of multi-label reference masks")
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: fit the two mask-scale weights (about a second)")
    p.add_argument("--without", action="append", default=[], choices=COMPONENTS, help="switch a component off (ablation); repeatable")
    add_prior_options(p)


def reference_pairs(refs: list[str], masks: list[str]) -> tuple[list[Path], list[Path]]:
    """Expand --ref/--ref-mask into matching lists (folders are paired by file stem)."""
    from persam.io import find_images

    if not refs:
        raise ValueError("no reference given; pass --ref IMAGE --ref-mask MASK (or --concept FILE)")
    if len(refs) != len(masks):
        raise ValueError(f"got {len(refs)} --ref and {len(masks)} --ref-mask; pass one mask per reference photo")
    images, mask_paths = [], []
    for ref, mask in zip(refs, masks):
        ref_p, mask_p = Path(ref), Path(mask)
        if ref_p.is_dir():
            by_stem = {stem.as_posix(): p for p, stem in find_images([mask_p])} if mask_p.is_dir() else {}
            for img, stem in find_images([ref_p]):
                if stem.as_posix() not in by_stem:
                    raise FileNotFoundError(f"{img}: no mask named {stem}.* in {mask_p}; put each photo's mask there under the same name")
                images.append(img)
                mask_paths.append(by_stem[stem.as_posix()])
        else:
            images.append(ref_p)
            mask_paths.append(mask_p)
    return images, mask_paths


def check_reference_options(args: argparse.Namespace) -> None:
    """Refuse (exit 2) the learning options given with ``--concept`` (a concept file is already learned)."""
    if not getattr(args, "concept", None):
        return
    given = [name for name, value in (("--ref", args.ref), ("--ref-mask", args.ref_mask), ("--label", args.label is not None),
                                      ("--finetune", args.finetune), ("--without", args.without),
                                      ("--prior", args.prior != "similarity"), ("--parts", args.parts is not None)) if value]
    if given:
        raise ValueError(f"{', '.join(given)} only apply when learning from --ref/--ref-mask; {args.concept} is already "
                         f"learned: drop {', '.join(given)} or pass --ref/--ref-mask instead of --concept")


def build_concept(args: argparse.Namespace, model):
    """The concept from --concept, or learned from the references."""
    if getattr(args, "concept", None):
        from persam.session.concept_file import load_concept

        concept = load_concept(args.concept, model)
    else:
        images, masks = reference_pairs(args.ref, args.ref_mask)
        settings = PersamSettings().without(*args.without)
        concept = model.personalize(images, masks, finetune=args.finetune, label=args.label, settings=settings,
                                    **prior_options(args))
    if getattr(args, "presence_threshold", None) is not None:
        concept.presence_threshold = args.presence_threshold
    return concept
