"""What a batch of photos writes: one mask (or label map) per photo, optional overlays, ``manifest.json``
and, for COCO, ``annotations.json``. No front end here: ``persam segment`` and the web app both use it.

Files under the output folder ``root``:
    ``<stem>.png``          binary mask (0/255), or a label map 1..N with ``max_instances > 1``
    ``<stem>_overlay.jpg``  the photo with the mask tinted (``overlay``)
    ``manifest.json``       ``{"method", "model", ..., "inputs": [entry, ...]}``, one entry per photo in input order:
                            ``{"input", "status": "written", "mask", "present", "instances", "scores",
                            "prompts"[, "overlay"]}``
                            where ``prompts`` holds, per instance (parallel to ``scores``), the prompts of every
                            decoder pass that made its mask, first pass first: ``[{"points_xy": [[x, y], ...],
                            "point_labels": [1, 0, ...], "box_xyxy": [x0, y0, x1, y1] or null}, ...]``, photo pixels;
                            SAM 2 models add ``"object_scores"`` (per instance, the object-score
                            logit of its final pass, > 0 = an object is there),
                            or ``{"input", "status": "skipped", "reason"}`` (bad input the user can fix), or
                            ``{"input", "status": "failed", "reason"}`` (an internal error: a bug, traceback in
                            ``failed.log``); callers may add keys (``save(**extra)``)
    ``annotations.json``    (``coco``) COCO images / annotations with RLE masks, category 1 "concept"

Output names: ``persam.io.naming`` (the one rule). Resume: ``persam.jobs.manifest``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
ANNOTATIONS = "annotations.json"


@dataclass(frozen=True)
class OutputOptions:
    """What to write per photo.

    Attributes:
        max_instances: above 1 the mask file is a label map (0 background, 1..N instances).
        overlay: also write ``<stem>_overlay.jpg``.
        coco: also collect COCO records (``annotations.json``; needs pycocotools).
    """

    max_instances: int = 1
    overlay: bool = False
    coco: bool = False


@dataclass
class Done:
    """What one photo produced: its manifest entry and, with ``coco``, its (image, annotations) records."""

    entry: dict
    coco: tuple[dict, list[dict]] | None = None

    @classmethod
    def skipped(cls, path: Path, exc: BaseException) -> Done:
        """The entry of a photo that could not be read or segmented."""
        return cls({"input": str(path), "status": "skipped", "reason": str(exc)})


def coco_records(path: Path, shape: tuple[int, int], results: Sequence) -> tuple[dict, list[dict]]:
    """COCO image and annotation records (without ids) of one photo's results.

    Args:
        path: the photo (its ``file_name``).
        shape: (H, W) of the photo.
        results: objects with ``mask`` (H, W) bool, ``score`` and ``present``; pass the present ones.
    Returns:
        (image record, annotation records); bbox is COCO XYWH in photo pixels.
    """
    from pycocotools import mask as mask_utils

    image = {"file_name": str(path), "height": int(shape[0]), "width": int(shape[1])}
    annotations = []
    for r in results:
        rle = mask_utils.encode(np.asfortranarray(r.mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, w, h = (float(v) for v in mask_utils.toBbox(rle))
        annotations.append(
            {
                "category_id": 1,
                "segmentation": rle,
                "area": int(r.mask.sum()),
                "bbox": [x0, y0, w, h],
                "iscrowd": 0,
                "score": float(r.score),
                "present": bool(r.present),
            }
        )
    return image, annotations


def write_result(
    root: Path,
    path: Path,
    stem: Path,
    pixels: np.ndarray | None,
    written: np.ndarray,
    results: Sequence,
    options: OutputOptions,
) -> Done:
    """Write one photo's mask (and overlay) under ``root``; safe to call from several threads.

    Args:
        root: the output folder.
        path: the input photo (recorded in the manifest).
        stem: output name relative to ``root``, without suffix (``sub/01`` -> ``root/sub/01.png``).
        pixels: (H, W, 3) uint8 photo for the overlay, or None (no overlay).
        written: (H, W) bool mask, or (H, W) integer label map when ``options.max_instances > 1``.
        results: the per-instance results (``mask``, ``score``, ``present``).
        options: what to write.
    """
    from persam.io import save_label_map, save_mask, save_overlay

    target = root / Path(stem).with_suffix(".png")
    if options.max_instances > 1:
        save_label_map(target, written)
        tint = written > 0
    else:
        save_mask(target, written)
        tint = written
    entry = {
        "input": str(path),
        "status": "written",
        "mask": target.relative_to(root).as_posix(),
        "present": any(bool(r.present) for r in results),
        "instances": int(sum(bool(r.present) for r in results)),
        "scores": [round(float(r.score), 6) for r in results],
        "prompts": [[record.to_dict() for record in getattr(r, "prompts", ())] for r in results],
    }
    if any(getattr(r, "object_score", None) is not None for r in results):  # SAM 2's object-score logits
        entry["object_scores"] = [None if r.object_score is None else round(float(r.object_score), 6) for r in results]
    if any(getattr(r, "part_count", None) is not None for r in results):  # the part-aware prior's choice
        entry["parts"] = [{"chosen": r.part_count, "candidates": [s.to_dict() for s in r.part_scores]} for r in results]
    if options.overlay and pixels is not None:
        overlay_path = root / f"{Path(stem).as_posix()}_overlay.jpg"
        save_overlay(overlay_path, pixels, tint)
        entry["overlay"] = overlay_path.relative_to(root).as_posix()
    coco = coco_records(path, written.shape, [r for r in results if r.present]) if options.coco else None
    return Done(entry, coco)


@dataclass
class Outputs:
    """What a batch wrote so far, in input order, for ``manifest.json`` and ``annotations.json``."""

    root: Path
    options: OutputOptions = field(default_factory=OutputOptions)
    entries: list[dict] = field(default_factory=list)
    coco_images: list[dict] = field(default_factory=list)
    coco_annotations: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def add(self, done: Done) -> None:
        """Record one photo, numbering its COCO records."""
        self.entries.append(done.entry)
        if done.coco is not None:
            image, annotations = done.coco
            image_id = len(self.coco_images) + 1
            self.coco_images.append({"id": image_id, **image})
            for ann in annotations:
                self.coco_annotations.append({"id": len(self.coco_annotations) + 1, "image_id": image_id, **ann})

    def manifest(self, method: str, model: str, **extra: object) -> dict:
        """The ``manifest.json`` payload (``extra`` keys go before ``inputs``)."""
        return {"method": method, "model": model, **extra, "inputs": self.entries}

    def annotations(self) -> dict:
        """The ``annotations.json`` payload (COCO)."""
        return {
            "images": self.coco_images,
            "annotations": self.coco_annotations,
            "categories": [{"id": 1, "name": "concept"}],
        }

    def write_json(self, name: str, payload: object) -> None:
        """Write ``root/name`` as indented JSON, atomically."""
        from persam.io import atomic_write_text

        atomic_write_text(self.root / name, json.dumps(payload, indent=2) + "\n")

    def save(self, method: str, model: str, **extra: object) -> None:
        """Write ``manifest.json`` (and ``annotations.json`` with ``coco``) as they stand now; atomic each.

        ``extra``: more manifest keys (JSON values), e.g. the settings for ``finished``."""
        self.write_json(MANIFEST, self.manifest(method, model, **extra))
        if self.options.coco:
            self.write_json(ANNOTATIONS, self.annotations())

    def remove_stale_temps(self, stems: Sequence[Path]) -> list[Path]:
        """Remove what an interrupted run's atomic writes left (``persam.io.atomic``'s hidden temp files) in
        the folders this batch writes: ``root`` and the folder of each output stem. Call it before writing."""
        from persam.io import remove_stale_temps

        return remove_stale_temps([self.root, *((self.root / stem).parent for stem in stems)])

    def counts(self) -> dict[str, int]:
        """{"written", "skipped", "failed", "absent"}: photos written, skipped (bad input), failed (an internal
        error), and written photos without the object."""
        written = [e for e in self.entries if e["status"] == "written"]
        failed = sum(e["status"] == "failed" for e in self.entries)
        return {
            "written": len(written),
            "skipped": len(self.entries) - len(written) - failed,
            "failed": failed,
            "absent": sum(not e["present"] for e in written),
        }


def output_stems(targets: Sequence[tuple[Path, Path]]) -> list[Path]:
    """Unique output names for ``(photo, stem)`` pairs: ``persam.io.naming.output_stems``, the one rule."""
    from persam.io.naming import output_stems as stems

    return stems(targets)


def outside(targets: Sequence[tuple[Path, Path]], root: str | os.PathLike) -> tuple[list[tuple[Path, Path]], int]:
    """(the targets not under the output folder ``root``, how many were), so a batch never reads its own outputs."""
    base = Path(root).resolve()
    kept = [t for t in targets if base not in Path(t[0]).resolve().parents]
    return kept, len(targets) - len(kept)
