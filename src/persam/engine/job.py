"""What a running job holds (``Job``), what it gives back (``JobResult``) and what feeds it (``Source``)."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TypeVar

from persam.engine.spec import JobSpec
from persam.errors import INTERNAL_ERROR
from persam.jobs.outputs import Done, Outputs

T = TypeVar("T")
#: ``warn(line)``: one line for the user (the command line prints it on stderr).
Warn = Callable[[str], None]
#: ``progress(items, total, what)``: the items, passed through a progress display.
Progress = Callable[[Iterable[T], int, str], Iterator[T]]
#: Where a batch keeps the tracebacks of the photos that failed (bugs, not bad input).
FAILED_LOG = "failed.log"


def quiet_warn(line: str) -> None:
    """A ``Warn`` that says nothing."""


def plain_progress(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    """A ``Progress`` that shows nothing."""
    yield from items


@dataclass(frozen=True)
class Source:
    """One photo of a run.

    Attributes:
        path: where it is read (a file, or the index's name of it).
        name: what the manifest records as its ``input`` (the path, or an upload's own name).
        stem: its output name, relative to the output folder, without extension.
    """

    path: Path
    name: str
    stem: Path

    def __post_init__(self) -> None:
        stem = PurePath(self.stem)
        if stem.is_absolute() or ".." in stem.parts:
            # the front end's naming is wrong (a bug, not the user's input): its outputs would land elsewhere
            raise ValueError(f"output name {str(self.stem)!r} of {self.name} is not inside the output folder")


def failed(name: str, exc: BaseException) -> tuple[Done, str]:
    """The manifest entry of a photo an internal error stopped, and that error's traceback text."""
    reason = f"internal error (a bug in persam, not a problem with the photo): {type(exc).__name__}: {exc}"
    text = "".join(traceback.format_exception(exc))
    return Done({"input": name, "status": "failed", "reason": reason}), f"{name}:\n{text}"


@dataclass
class Job:
    """A checked spec with everything loaded, as an executor runs it."""

    spec: JobSpec
    sources: list[Source]
    concept: object
    album: object | None
    outputs: Outputs
    previous: dict[str, Done]
    key: str
    extra: dict
    warn: Warn = quiet_warn
    progress: Progress = plain_progress
    tracebacks: list[str] = field(default_factory=list)
    #: entries for what could not even be listed (a damaged part file of the index), added at the end
    damaged: list[Done] = field(default_factory=list)

    def save(self, complete: bool) -> None:
        """Write the manifest (and COCO annotations) as they stand, and the failed photos' tracebacks."""
        from persam.io import atomic_write_text

        concept = self.concept
        self.outputs.save(concept.method, concept.model.backend.name, **self.extra, complete=complete)
        if self.tracebacks:
            atomic_write_text(self.outputs.root / FAILED_LOG, "\n".join(self.tracebacks))

    def reusable(self, source: Source, sha: str | None) -> Done | None:
        """The earlier run's result for ``source`` when its bytes and output name are the same."""
        before = self.previous.get(source.name)
        if before is None or sha is None or before.entry.get("sha256") != sha:
            return None
        return before if before.entry.get("mask") == source.stem.with_suffix(".png").as_posix() else None


@dataclass
class JobResult:
    """What a run did.

    Attributes:
        outputs: every photo's manifest entry, in input order.
        reused: photos an earlier run had finished with the same spec.
        workers: photos segmented at once (local threads, or Ray actors).
        executor: "local" or "ray".
        not_run: photos the Ray pipeline did not finish (it failed).
    """

    outputs: Outputs
    reused: int
    workers: int
    executor: str = "local"
    not_run: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """{"written", "skipped", "failed", "absent"}."""
        return self.outputs.counts()

    @property
    def status(self) -> int:
        """0: every photo written; 1: some skipped (bad input) or not run; 70: some failed (a bug)."""
        counts = self.counts
        if counts["failed"]:
            return INTERNAL_ERROR
        return 1 if counts["skipped"] or self.not_run else 0

    def summary(self, command: str = "persam segment") -> str:
        """The one summary line of the run."""
        c = self.counts
        earlier = f", {self.reused} by an earlier run; --overwrite redoes them" if self.reused else ""
        failed = f", {c['failed']} failed (see {self.outputs.root / FAILED_LOG})" if c["failed"] else ""
        not_run = f", {self.not_run} not run" if self.not_run else ""
        on = f", on Ray with {self.workers} worker(s)" if self.executor == "ray" else ""
        return (
            f"{command}: {c['written']} written ({c['absent']} without the object{earlier}), "
            f"{c['skipped']} skipped{failed}{not_run}{on}; see {self.outputs.root / 'manifest.json'}"
        )
