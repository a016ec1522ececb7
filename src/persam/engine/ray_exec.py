"""The Ray executor: photos an earlier run finished are reused, the others segmented on Ray
(``persam.jobs.ray_segment``'s pipeline over the embedding store); the manifest is written here, in input
order, by the same writer as the local executor's, even when the pipeline fails midway."""

from __future__ import annotations

import tempfile
from pathlib import Path

from persam.engine.job import Job, JobResult


def _concept_bytes(job: Job) -> bytes:
    """The run's concept as a concept file's bytes, as loaded and adjusted by the spec (its presence
    threshold): never the given file's bytes, which would drop what the spec changed."""
    from persam.session.concept_file import save_concept

    with tempfile.TemporaryDirectory() as folder:
        return save_concept(job.concept, Path(folder) / "concept.persam").read_bytes()


def run_ray(job: Job) -> JobResult:
    """Segment ``job``'s stored photos on Ray; returns what was done (the manifest is written)."""
    from persam.jobs.ray_segment import run_segment

    spec, outputs = job.spec, job.outputs
    hashes = job.album.hashes()
    todo, reused = [], 0
    for source in job.sources:
        if job.reusable(source, hashes.get(source.name)) is None:
            todo.append(source)
    done: dict = {}
    pool = None
    try:
        done, pool = run_segment(
            spec.index,
            [(s.name, s.stem) for s in todo],
            _concept_bytes(job),
            spec.model,
            outputs.root,
            outputs.options,
            spec.method.max_instances,
            spec.method.absent,
            spec.executor.ray,
            key=job.key,
            results=done,
        )
    finally:  # what finished is recorded, in input order, even when the pipeline failed
        waiting = {s.name for s in todo}
        for source in job.sources:
            if source.name not in waiting:
                reused += 1
                outputs.add(job.previous[source.name])
            elif source.name in done:
                outputs.add(done[source.name])
        complete = len(outputs.entries) == len(job.sources)
        for damaged in job.damaged:
            outputs.add(damaged)
        for entry in outputs.entries:
            if entry["status"] == "failed" and entry.get("traceback"):
                job.tracebacks.append(f"{entry['input']}:\n{entry.pop('traceback')}")
        job.save(complete=complete)
    for entry in outputs.entries:
        if entry["status"] != "written":
            job.warn(f"{entry['status']} {entry['input']}: {entry['reason']}")
    from persam.jobs.ray_common import DROPPED

    for source in todo:
        if source.name not in done:  # its batch failed every try and was dropped; the others went on
            job.warn(f"not run {source.name}: {DROPPED}")
    not_run = sum(s.name not in done for s in todo)
    return JobResult(outputs, reused, pool.workers if pool is not None else 0, executor="ray", not_run=not_run)
