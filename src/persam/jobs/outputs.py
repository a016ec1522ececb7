"""What a batch of photos writes: one mask (or label map) per photo, optional overlays, ``manifest.json``
and, for COCO, ``annotations.json``. No front end here: ``persam segment`` and the web app both use it.

Files under the output folder ``root``:
    ``<stem>.png``          binary mask (0/255), or a label map 1..N with ``max_instances > 1``
    ``<stem>_overlay.jpg``  the photo with the mask tinted (``overlay``)
    ``manifest.json``       ``{"method", "model", "inputs": [entry, ...]}``, one entry per photo in input order:
                            ``{"input", "status": "written", "mask", "present", "instances", "scores"[, "overlay"]}``
                            or ``{"input", "status": "skipped", "reason"}``
    ``annotations.json``    (``coco``) COCO images / annotations with RLE masks, category 1 "concept"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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
    def skipped(cls, path: Path, exc: BaseException) -> "Done":
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
        annotations.append({"category_id": 1, "segmentation": rle, "area": int(r.mask.sum()), "bbox": [x0, y0, w, h],
                            "iscrowd": 0, "score": float(r.score), "present": bool(r.present)})
    return image, annotations


def write_result(root: Path, path: Path, stem: Path, pixels: np.ndarray | None, written: np.ndarray,
                 results: Sequence, options: OutputOptions) -> Done:
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
    entry = {"input": str(path), "status": "written", "mask": target.relative_to(root).as_posix(),
             "present": any(bool(r.present) for r in results), "instances": int(sum(bool(r.present) for r in results)),
             "scores": [round(float(r.score), 6) for r in results]}
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

    def manifest(self, method: str, model: str) -> dict:
        """The ``manifest.json`` payload."""
        return {"method": method, "model": model, "inputs": self.entries}

    def annotations(self) -> dict:
        """The ``annotations.json`` payload (COCO)."""
        return {"images": self.coco_images, "annotations": self.coco_annotations,
                "categories": [{"id": 1, "name": "concept"}]}

    def write_json(self, name: str, payload: object) -> None:
        """Write ``root/name`` as indented JSON, atomically."""
        from persam.io import atomic_write_text

        atomic_write_text(self.root / name, json.dumps(payload, indent=2) + "\n")

    def save(self, method: str, model: str) -> None:
        """Write ``manifest.json`` (and ``annotations.json`` with ``coco``) as they stand now; atomic each."""
        self.write_json(MANIFEST, self.manifest(method, model))
        if self.options.coco:
            self.write_json(ANNOTATIONS, self.annotations())

    def counts(self) -> dict[str, int]:
        """{"written", "skipped", "absent"}: photos written, photos skipped, written photos without the object."""
        written = [e for e in self.entries if e["status"] == "written"]
        return {"written": len(written), "skipped": len(self.entries) - len(written),
                "absent": sum(not e["present"] for e in written)}
