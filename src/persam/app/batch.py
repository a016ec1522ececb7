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

from persam.app.files import expand_uploads
from persam.engine.spec import ExecutorSpec
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
        from persam.session.options import check_instances

        check_instances(self.max_instances, "similarity")


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


def caption(entry: dict, name: str) -> str:
    """``name · score 0.93 · present`` (best score; instance count when several; the part-aware prior's
    chosen parts)."""
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
    """Segment every uploaded photo (zips are opened) on the job engine and zip the outputs.

    A photo that cannot be read or segmented is listed in ``skipped`` and in the manifest; the others are
    still written. The manifest records each photo under its upload's name, never the server's path.

    Raises:
        persam.errors.PersamError: nothing uploaded, an unreadable zip, options the concept refuses.
    """
    from persam.engine.job import Source
    from persam.engine.runner import run_job
    from persam.engine.spec import GivenConcept, JobSpec, MethodSpec, OutputSpec
    from persam.io.lock import LOCK_NAME
    from persam.io.naming import output_stems
    from persam.session.concept_file import concept_key

    if not uploads:
        raise OptionsError("no photo uploaded; add photos (or a zip of photos) first")
    workdir.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="segment-", dir=workdir))
    targets = expand_uploads(list(uploads), run)
    names = [stem + path.suffix for path, stem in targets]  # the upload's name (or its path inside the zip)
    stems = output_stems([(name, stem) for name, (_, stem) in zip(names, targets)])
    sources = [Source(path, name, stem) for (path, _), name, stem in zip(targets, names, stems)]
    spec = JobSpec(
        concept=GivenConcept(concept_key(concept)),
        output=OutputSpec(str(run / "out"), format="coco", overlay=True),
        targets=tuple(str(path) for path, _ in targets),
        method=MethodSpec(max_instances=options.max_instances, detect_absent=options.detect_absent),
        executor=ExecutorSpec(workers=1),
    )

    def steps(items, total: int, what: str):
        for i, item in enumerate(items):
            if progress is not None:
                progress(i, total, f"segmenting photo {i + 1} of {total}")
            yield item

    result = run_job(spec, model=concept.model, concept=concept, sources=sources, progress=steps)
    outputs = result.outputs
    gallery, skipped = [], []
    for entry in outputs.entries:
        name, reason = entry["input"], entry.get("reason", "")
        if entry["status"] == "written":
            gallery.append((str(outputs.root / entry["overlay"]), caption(entry, name)))
        else:
            skipped.append(reason if reason.startswith(f"{name}:") else f"{name}: {reason}")
    if progress is not None:
        progress(len(targets), len(targets), "packing the zip")
    zip_path = run / "persam-results.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(outputs.root.rglob("*")):
            if file.is_file() and file.name != LOCK_NAME:
                archive.write(file, file.relative_to(outputs.root).as_posix())
    counts = result.counts
    failed = f", {counts['failed']} failed (an internal error)" if counts["failed"] else ""
    summary = (
        f"{counts['written']} photo(s) segmented, {counts['absent']} without the object, "
        f"{counts['skipped']} skipped{failed}; masks, overlays, manifest.json and annotations.json in the zip"
    )
    return BatchResult(gallery=gallery, zip_path=zip_path, summary=summary, skipped=skipped)
