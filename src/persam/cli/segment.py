"""``persam segment``: find a personalized object in photos."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persam.cli.common import add_model_options, load_model, progress, user_errors, warn
from persam.method.settings import COMPONENTS, PersamSettings


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """--ref/--ref-mask (repeatable, or folders of pairs), --label, --finetune, --without."""
    p.add_argument("--ref", action="append", default=[], metavar="IMAGE", help="reference photo (repeatable), or a folder of them")
    p.add_argument("--ref-mask", action="append", default=[], metavar="MASK", help="its mask, nonzero = object (one per --ref), or a folder of masks named like the photos")
    p.add_argument("--label", type=int, help="use only this value of multi-label reference masks")
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: fit the two mask-scale weights (about a second)")
    p.add_argument("--without", action="append", default=[], choices=COMPONENTS, help="switch a component off (ablation); repeatable")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a personalized object in new photos",
        description="Learn the object from reference photo(s) and mask(s), or load a saved concept, then write a mask for each target photo.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="image files or folders (searched recursively)")
    add_reference_options(p)
    p.add_argument("--concept", metavar="FILE", help="a concept saved by `persam personalize` (instead of --ref)")
    p.add_argument("--index", metavar="FILE", help="segment the photos of an album index (`persam index`): decoder only")
    p.add_argument("--max-instances", type=int, default=1, metavar="N", help="find up to N instances; writes a label map (1..N)")
    p.add_argument("--detect-absent", action="store_true", help="write an empty mask when the object is not in the photo")
    p.add_argument("--presence-threshold", type=float, metavar="S", help="similarity below which the object is absent (implies --detect-absent)")
    p.add_argument("--format", choices=["png", "coco"], default="png", help="coco: also write annotations.json with RLE masks")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_model_options(p)
    p.set_defaults(func=run)


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


def build_concept(args: argparse.Namespace, model):
    """The concept from --concept, or learned from the references."""
    if args.concept:
        from persam.concepts import load_concept

        concept = load_concept(args.concept, model)
    else:
        images, masks = reference_pairs(args.ref, args.ref_mask)
        settings = PersamSettings().without(*args.without)
        concept = model.personalize(images, masks, finetune=args.finetune, label=args.label, settings=settings)
    if getattr(args, "presence_threshold", None) is not None:
        concept.presence_threshold = args.presence_threshold
    return concept


@dataclass
class Outputs:
    """What a batch wrote, for manifest.json and annotations.json."""

    root: Path
    entries: list[dict] = field(default_factory=list)
    coco_images: list[dict] = field(default_factory=list)
    coco_annotations: list[dict] = field(default_factory=list)

    def skipped(self, path: Path, reason: str) -> None:
        self.entries.append({"input": str(path), "status": "skipped", "reason": reason})

    def write_json(self, name: str, payload: object) -> None:
        from persam.io import atomic_write_text

        atomic_write_text(self.root / name, json.dumps(payload, indent=2) + "\n")


def _coco_add(outputs: Outputs, path: Path, shape: tuple[int, int], results: list) -> None:
    from pycocotools import mask as mask_utils

    image_id = len(outputs.coco_images) + 1
    outputs.coco_images.append({"id": image_id, "file_name": str(path), "height": shape[0], "width": shape[1]})
    for r in results:
        rle = mask_utils.encode(np.asfortranarray(r.mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, w, h = (float(v) for v in mask_utils.toBbox(rle))
        outputs.coco_annotations.append(
            {"id": len(outputs.coco_annotations) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle,
             "area": int(r.mask.sum()), "bbox": [x0, y0, w, h], "iscrowd": 0, "score": float(r.score), "present": bool(r.present)}
        )


def segment_one(concept, image, args: argparse.Namespace) -> tuple[np.ndarray, list]:
    """(mask or label map, results) of one photo, as the options ask."""
    detect = args.detect_absent or args.presence_threshold is not None
    if args.max_instances > 1:
        found = concept.segment_instances(image, max_instances=args.max_instances, detect_absent=detect)
        return found.labels, found.instances
    result = concept.segment(image, detect_absent=detect)
    return result.mask, [result]


def write_result(outputs: Outputs, path: Path, stem: Path, pixels, written: np.ndarray, results: list, args) -> None:
    from persam.io import save_label_map, save_mask, save_overlay

    target = outputs.root / stem.with_suffix(".png")
    if args.max_instances > 1:
        save_label_map(target, written)
        tint = written > 0
    else:
        save_mask(target, written)
        tint = written
    entry = {"input": str(path), "status": "written", "mask": str(target.relative_to(outputs.root)),
             "present": any(r.present for r in results), "instances": sum(r.present for r in results),
             "scores": [round(float(r.score), 6) for r in results]}
    if args.overlay and pixels is not None:
        overlay_path = outputs.root / f"{stem}_overlay.jpg"
        save_overlay(overlay_path, pixels, tint)
        entry["overlay"] = str(overlay_path.relative_to(outputs.root))
    outputs.entries.append(entry)
    if args.format == "coco":
        _coco_add(outputs, path, written.shape, [r for r in results if r.present])


def index_targets(paths: list[str]) -> list[tuple[Path, Path]]:
    """(photo, output stem) for indexed photos: stems relative to their common folder."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    return [(Path(p), Path(p).relative_to(root).with_suffix("")) for p in paths]


def run(args: argparse.Namespace) -> int:
    from persam.io import find_images, load_image

    if args.concept and args.ref:
        raise ValueError("pass either --concept FILE or --ref/--ref-mask, not both")
    if args.max_instances < 1:
        raise ValueError(f"--max-instances must be at least 1, got {args.max_instances}")
    if args.index:
        from persam.index import AlbumIndex

        album = AlbumIndex.open(args.index, create=False)
        targets = index_targets(album.paths())
    else:
        album = None
        targets = find_images(args.targets)
    if not targets:
        raise ValueError("no image files among the targets; pass .jpg/.png files or folders holding them (or --index FILE)")
    model = load_model(args)
    concept = build_concept(args, model)
    outputs = Outputs(Path(args.output))
    errors = user_errors()
    for path, stem in progress(targets, len(targets), "segment"):
        try:
            if album is not None:
                pixels = load_image(path) if args.overlay else None
                image = album.encoded(path, model.backend)
            else:
                pixels = image = load_image(path)
            written, results = segment_one(concept, image, args)
        except errors as exc:
            warn(f"skipped {path}: {exc}")
            outputs.skipped(path, str(exc))
            continue
        write_result(outputs, path, stem, pixels, written, results, args)
    outputs.write_json("manifest.json", {"method": concept.method, "model": model.backend.name, "inputs": outputs.entries})
    if args.format == "coco":
        outputs.write_json("annotations.json", {"images": outputs.coco_images, "annotations": outputs.coco_annotations,
                                                "categories": [{"id": 1, "name": "concept"}]})
    failed = sum(e["status"] == "skipped" for e in outputs.entries)
    if failed:
        warn(f"{failed} of {len(targets)} targets skipped; the others were written to {outputs.root} (see manifest.json)")
    return 1 if failed else 0
