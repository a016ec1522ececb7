"""Fine-tuning data for DreamBooth: the subject segmented in every training photo.

Layout of the data folder (readable by ``datasets.load_dataset("imagefolder",
data_dir=DATA)``; ``file_name`` is relative to DATA)::

    DATA/images/<name>.png      the photo (RGB, EXIF orientation applied)
    DATA/masks/<name>.png       the subject mask (0 / 255), same size
    DATA/overlays/<name>.jpg    the photo with the mask tinted, to check by eye
    DATA/metadata.jsonl         {"file_name": "images/<name>.png",
                                 "mask_file_name": "masks/<name>.png", "text": PROMPT}
    DATA/rejected.json          photos left out (or kept with ``force``), with the reason
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persam.errors import InputError, MissingInputError, PersamError
from persam.io import (
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    find_images,
    load_image,
    save_mask,
    save_overlay,
)

#: A plausible subject covers at least this fraction of the photo ...
MIN_AREA = 0.01
#: ... and at most this fraction.
MAX_AREA = 0.95


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` wrote.

    Attributes:
        kept: metadata rows written (one per photo in ``metadata.jsonl``).
        rejected: ``{"photo", "name", "reason", "area", "score", "included"}``
            per photo failing a check (``included`` is True with ``force``).
    """

    root: Path
    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)


def check_mask(present: bool, mask: np.ndarray, min_area: float = MIN_AREA, max_area: float = MAX_AREA) -> str | None:
    """Why a segmentation is unfit for training, or None when it is plausible."""
    if not present:
        return "absent: the subject was not found in the photo"
    area = float(mask.mean()) if mask.size else 0.0
    if area < min_area:
        return f"implausible mask: covers {area:.2%} of the photo (< {min_area:.0%})"
    if area > max_area:
        return f"implausible mask: covers {area:.2%} of the photo (> {max_area:.0%})"
    return None


def prepare_dataset(
    concept,
    photos: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    prompt: str,
    force: bool = False,
    min_area: float = MIN_AREA,
    max_area: float = MAX_AREA,
    on_error=None,
    progress=None,
) -> PrepareReport:
    """Segment the subject (with absence detection) in every photo and write the data folder.

    Args:
        concept: a ``persam.session.photo.Concept`` learned from the reference photo.
        photos: image files or folders (searched recursively).
        output: the data folder (created; files of the same names are replaced).
        prompt: the ``text`` of every metadata row (e.g. "a photo of sks dog").
        force: keep rejected photos in ``metadata.jsonl`` too (still listed in
            ``rejected.json``, with ``"included": true``).
        on_error: called with (photo, exception) for an unreadable photo
            (which is rejected); default: re-raise.
        progress: ``progress(items, total, desc, unit=...)`` wrapping the photo
            loop (as ``persam.jobs.davis.run_davis``'s); None = no progress display.

    Raises:
        ValueError: no photos, or no photo kept.
    """
    from persam.io.naming import output_stems

    targets = find_images(list(photos))
    if not targets:
        raise InputError("no image files among the photos; pass .jpg/.png files or folders holding them")
    root = Path(output)
    report = PrepareReport(root)
    work = list(zip(targets, [stem.as_posix() for stem in output_stems(targets)]))
    if progress is not None:
        work = progress(work, len(work), "dreambooth prepare", unit="photo")
    for (path, _), name in work:
        try:
            pixels = load_image(path)
            result = concept.segment(pixels, detect_absent=True)
        except PersamError as exc:
            if on_error is None:
                raise
            on_error(path, exc)
            report.rejected.append(
                {"photo": str(path), "name": name, "reason": f"unreadable: {exc}", "included": False}
            )
            continue
        reason = check_mask(result.present, result.mask, min_area, max_area)
        if reason is not None:
            report.rejected.append(
                {
                    "photo": str(path),
                    "name": name,
                    "reason": reason,
                    "area": round(float(result.mask.mean()), 6),
                    "score": round(float(result.score), 6),
                    "included": force,
                }
            )
            if not force:
                continue
        image_rel, mask_rel = f"images/{name}.png", f"masks/{name}.png"
        from PIL import Image

        atomic_save(root / image_rel, lambda tmp, pixels=pixels: Image.fromarray(pixels).save(tmp, format="PNG"))
        save_mask(root / mask_rel, result.mask)
        save_overlay(root / "overlays" / f"{name}.jpg", pixels, result.mask)
        report.kept.append({"file_name": image_rel, "mask_file_name": mask_rel, "text": prompt})
    atomic_write_json(root / "rejected.json", report.rejected)
    atomic_write_text(root / "metadata.jsonl", "".join(json.dumps(row) + "\n" for row in report.kept))
    if not report.kept:
        raise InputError(
            f"no photo kept ({len(report.rejected)} rejected, see {root / 'rejected.json'}); check the "
            "reference mask or pass --force"
        )
    return report


def read_metadata(data: str | os.PathLike) -> list[dict]:
    """The rows of DATA/metadata.jsonl, checked (files exist, masks named)."""
    root = Path(data)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise MissingInputError(f"{meta}: no such file; create the data folder with `persam dreambooth prepare`")
    rows = []
    for i, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{meta}:{i}: not JSON ({exc.msg})") from None
        for key in ("file_name", "mask_file_name"):
            if key not in row:
                raise InputError(f"{meta}:{i}: no {key!r}; recreate the data folder with `persam dreambooth prepare`")
            if not (root / row[key]).is_file():
                raise MissingInputError(f"{root / row[key]}: listed in {meta}:{i} but missing")
        rows.append(row)
    if not rows:
        raise InputError(f"{meta}: no training photos listed")
    return rows
