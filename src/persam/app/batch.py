"""Segment many uploaded photos with a concept and pack everything into one zip.

The files are those of ``persam segment -o OUT --overlay --format coco``
(``persam.jobs.outputs``): a PNG mask (or label map) per photo, its overlay,
``manifest.json`` and ``annotations.json`` (COCO, RLE masks).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from persam.app.files import expand_uploads, read_photo
from persam.errors import OptionsError
from persam.session.photo import Concept

#: ``progress(done, total, what)``: called before each photo and once at the end.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BatchOptions:
    """How to segment each photo.

    Attributes:
        detect_absent: an empty mask when the concept's presence test fails.
        max_instances: above 1, every instance (a label map 1..N per photo).
    """

    detect_absent: bool = False
    max_instances: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.max_instances <= 255:
            raise OptionsError(f"max instances must be 1..255, got {self.max_instances}")


@dataclass(frozen=True)
class BatchResult:
    """What a batch produced.

    Attributes:
        gallery: (overlay JPEG path, caption) per written photo, in upload order.
        zip_path: the zip of masks, overlays, manifest.json and annotations.json.
        summary: one line for the page.
        skipped: "name: reason" per photo that could not be read or segmented.
    """

    gallery: list[tuple[str, str]]
    zip_path: Path
    summary: str
    skipped: list[str]


def _segment(concept: Concept, pixels, options: BatchOptions):
    """(mask or label map, results) of one photo."""
    if options.max_instances > 1:
        found = concept.segment_instances(
            pixels, max_instances=options.max_instances, detect_absent=options.detect_absent
        )
        return found.labels, found.instances
    result = concept.segment(pixels, detect_absent=options.detect_absent)
    return result.mask, [result]


def caption(entry: dict, name: str) -> str:
    """``name · score 0.93 · present`` (best score; instance count when several; the part-aware prior's chosen parts)."""
    scores = entry["scores"]
    best = f"score {max(scores):.2f}" if scores else "no score"
    state = (
        "absent"
        if not entry["present"]
        else ("present" if entry["instances"] <= 1 else f"{entry['instances']} instances")
    )
    chosen = [p["chosen"] for p in entry.get("parts", []) if p["chosen"] is not None]
    parts = f" · {chosen[0]} part{'s' if chosen[0] > 1 else ''}" if len(chosen) == 1 else ""
    return f"{name} · {best} · {state}{parts}"


def segment_uploads(
    concept: Concept,
    uploads: list[str | os.PathLike],
    options: BatchOptions,
    workdir: Path,
    progress: Progress | None = None,
) -> BatchResult:
    """Segment every uploaded photo (zips are opened) and zip the outputs.

    A photo that cannot be read or segmented is listed in ``skipped`` and in
    the manifest; the others are still written.

    Raises:
        ValueError: nothing uploaded, or an unreadable zip.
    """
    from persam.jobs.errors import user_errors
    from persam.jobs.outputs import Done, OutputOptions, Outputs, write_result

    if not uploads:
        raise OptionsError("no photo uploaded; add photos (or a zip of photos) first")
    if options.max_instances > 1 and concept.parts is not None:
        raise OptionsError(
            "several instances are found with the similarity prior only; set max instances to 1, "
            "or learn the concept with the similarity prior"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="segment-", dir=workdir))
    targets = expand_uploads(list(uploads), run)
    outputs = Outputs(run / "out", OutputOptions(max_instances=options.max_instances, overlay=True, coco=True))
    gallery, skipped = [], []
    errors = user_errors()
    for i, (path, stem) in enumerate(targets):
        name = stem + path.suffix  # the upload's name (or its path inside the zip), never the server's
        if progress is not None:
            progress(i, len(targets), f"segmenting {name}")
        try:
            pixels = read_photo(path)
            written, results = _segment(concept, pixels, options)
        except errors as exc:
            done = Done.skipped(Path(name), exc)
            skipped.append(str(exc) if str(exc).startswith(f"{path.name}:") else f"{name}: {exc}")
        else:
            done = write_result(outputs.root, Path(name), Path(stem), pixels, written, results, outputs.options)
            gallery.append((str(outputs.root / done.entry["overlay"]), caption(done.entry, name)))
        outputs.add(done)
    outputs.save(concept.method, concept.model.backend.name)
    if progress is not None:
        progress(len(targets), len(targets), "packing the zip")
    zip_path = run / "persam-results.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(outputs.root.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(outputs.root).as_posix())
    counts = outputs.counts()
    summary = (
        f"{counts['written']} photo(s) segmented, {counts['absent']} without the object, "
        f"{counts['skipped']} skipped; masks, overlays, manifest.json and annotations.json in the zip"
    )
    return BatchResult(gallery=gallery, zip_path=zip_path, summary=summary, skipped=skipped)
