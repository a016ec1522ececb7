"""The one batch runner: spec -> sources -> concept -> results -> outputs, for every front end.

``run_job`` checks the spec (``persam.engine.checks``), takes the output folder's lock (one run per
folder: ``persam.io.lock``), gathers the photos (files and folders, an album index, or the sources a
front end hands over, such as the web app's uploads), loads the model and the concept, reuses what an
earlier run with the same spec key finished (``persam.jobs.manifest``), and runs the rest in this
process (``persam.engine.local``) or on Ray (``persam.engine.ray_exec``). Output names follow
``persam.io.naming``; photos under the output folder are never inputs.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from persam.engine.checks import check_spec
from persam.engine.job import Job, JobResult, Progress, Source, Warn, plain_progress, quiet_warn
from persam.engine.resume import spec_key, spec_record
from persam.engine.spec import ConceptFile, JobSpec
from persam.errors import OptionsError
from persam.session.options import check_absence, check_instances


def _unique(found: list[tuple[Path, Path]], warn: Warn) -> list[tuple[Path, Path]]:
    seen, unique = set(), []
    for path, stem in found:
        key = Path(path).resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, stem))
    if len(unique) < len(found):
        warn(f"{len(found) - len(unique)} photos given more than once are segmented once")
    return unique


def gather_sources(spec: JobSpec, album, warn: Warn) -> list[Source]:
    """The run's photos in input order: each once, none under the output folder, uniquely named."""
    from persam.io import find_images
    from persam.io.naming import output_stems

    out = Path(spec.output.folder)
    if album is not None:
        names = album.paths()
        if not names:
            raise OptionsError(
                f"{spec.index}: the album index holds no photo; index photos into it first", field="index"
            )
        root = Path(os.path.commonpath([str(Path(p).parent) for p in names]))
        found = [(Path(p), Path(p).relative_to(root).with_suffix("")) for p in names]
        given = {Path(p): p for p in names}  # the store's own names (URIs keep their "//")
    else:
        found = _unique(find_images(list(spec.targets)), warn)
        given = {}
    kept = found
    if album is None:
        from persam.jobs.outputs import outside

        kept, inside = outside(found, out)
        if inside:
            warn(f"{inside} photos under the output folder {out} are left out of the inputs")
    if not kept:
        raise OptionsError("no image files among the photos given; give .jpg/.png files or folders", field="targets")
    stems = output_stems(kept)
    return [Source(Path(p), given.get(Path(p), str(p)), stem) for (p, _), stem in zip(kept, stems)]


def damaged_parts(album) -> list:
    """A "skipped" manifest entry naming each damaged part file of ``album`` (its photos cannot be listed)."""
    from persam.errors import StoreError
    from persam.jobs.outputs import Done

    found = [] if album is None else album.damaged()
    return [
        Done.skipped(Path(f), StoreError(f"{f}: {why}; its photos are left out; index them again")) for f, why in found
    ]


def run_job(
    spec: JobSpec,
    *,
    model=None,
    concept=None,
    sources: list[Source] | None = None,
    warn: Warn = quiet_warn,
    progress: Progress = plain_progress,
) -> JobResult:
    """Run ``spec``: segment its photos and write masks, overlays, ``manifest.json`` (and COCO).

    Args:
        spec: the run (checked here first; nothing is loaded before the checks pass).
        model: an already loaded session model (else ``spec.model`` is loaded).
        concept: the concept of a ``GivenConcept`` spec.
        sources: the photos, when the front end gathered them (uploads); else from ``spec``.
        warn: one line per photo skipped or failed, and per notice.
        progress: wraps the stream of photos (a progress bar).
    Returns:
        What was done; ``status`` is the exit status a command reports.
    Raises:
        persam.errors.PersamError: the spec is refused, the folder is busy, the model, concept or index
            cannot be used. Errors on one photo do not raise: the photo is listed.
    """
    from persam.engine.concept import build_concept
    from persam.io.images import pixel_limit
    from persam.io.lock import folder_lock
    from persam.jobs.manifest import finished
    from persam.jobs.outputs import OutputOptions, Outputs

    spec = check_spec(spec)
    out = Path(spec.output.folder)
    with folder_lock(out), pixel_limit(spec.max_pixels):
        album = None
        try:
            if spec.index is not None:
                from persam.session.store import open_album, require_readable

                album = open_album(spec.index, create=False)
                require_readable(album)  # nothing readable: one error; some parts damaged: listed below
            sources = gather_sources(spec, album, warn) if sources is None else sources
            if model is None:  # an index with a saved concept encodes no photo: no image encoder is built
                encodes = album is None or not isinstance(spec.concept, ConceptFile)
                if encodes:
                    from persam.engine.warm_start import warm_start

                    warm_start(spec, sources)  # the encoder compiled while PyTorch is imported
                model = spec.model.load(image_encoder=encodes)
            if album is not None:
                album.bind(model.backend)  # an index of another model: one error, not a skip per photo
            concept = build_concept(spec.concept, spec.method, model, given=concept)
            check_instances(spec.method.max_instances, concept.prior)  # a loaded concept's own prior
            check_absence(concept.prior, spec.method.absent)
            if album is not None and concept.matcher is not None:
                from persam.session.features import require_dino

                require_dino(album, concept.matcher)  # an index without its DINOv2 features: one error
            record = spec_record(replace(spec, targets=()), model.backend)
            key = spec_key(record)
            options = OutputOptions(spec.method.max_instances, spec.output.overlay, spec.output.format == "coco")
            outputs = Outputs(out, options)
            if stale := outputs.remove_stale_temps([s.stem for s in sources]):
                warn(f"removed {len(stale)} unfinished temporary file(s) that an interrupted run left in {out}")
            previous = {} if spec.output.overwrite else finished(out, key, options)
            extra = {**record, "spec_key": key}
            job = Job(spec, sources, concept, album, outputs, previous, key, extra, warn, progress)
            job.damaged = damaged_parts(album)
            if spec.executor.ray is not None:
                from persam.engine.ray_exec import run_ray

                return run_ray(job)
            from persam.engine.local import run_local

            return run_local(job)
        finally:
            if album is not None:
                album.close()
