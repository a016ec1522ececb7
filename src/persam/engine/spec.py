"""The job spec: one typed, immutable description of a segmentation run, built by every front end.

A ``JobSpec`` says where the concept comes from (reference photos with masks or prompts, a concept file,
or a concept the caller already holds), which photos to segment (files and folders, or an album index),
the method and its switches, the output, the model and the executor. The command line builds one from
its flags (``persam.cli.segment``), the web app from its page, the Label Studio front end from a project;
``persam.engine.checks.check_spec`` checks it once, and ``persam.engine.runner.run_job`` runs it.

Every field takes part in the resume key (``persam.engine.resume.spec_key``) unless its metadata says
``resume=False`` with a reason: a photo written by an earlier run is reused only when that run's key
equals this one, so a field cannot be forgotten.

Coordinates: photo pixels; points (x, y), boxes XYXY (x0, y0, x1, y1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from persam.jobs.ray_common import RayOptions
from persam.session.model_spec import ModelSpec

__all__ = [
    "ConceptFile",
    "ExecutorSpec",
    "GivenConcept",
    "JobSpec",
    "MethodSpec",
    "ModelSpec",
    "OutputSpec",
    "RayOptions",
    "References",
]

#: Field metadata: a file whose bytes (SHA-256), not its path, take part in the resume key.
FILE = {"file": True}


def not_resumed(reason: str) -> dict:
    """Field metadata: the field does not change the masks (``reason`` says why), so the resume key skips it."""
    return {"resume": False, "reason": reason}


@dataclass(frozen=True)
class References:
    """Learn the concept from reference photos.

    Attributes:
        photos: reference photo files (or folders of them, paired with ``masks`` by name).
        masks: one mask file (or folder) per photo, nonzero = object; empty with prompts.
        box: a box on the single reference photo (SAM makes the mask), XYXY photo pixels.
        points: clicks on the single reference photo, (x, y) photo pixels.
        point_labels: one per point, 1 = object, 0 = background.
        label: use only this value of multi-label masks.
    """

    photos: tuple[str, ...] = field(default=(), metadata=FILE)
    masks: tuple[str, ...] = field(default=(), metadata=FILE)
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    label: int | None = None

    @property
    def prompted(self) -> bool:
        """SAM makes the reference mask from a box or clicks."""
        return self.box is not None or bool(self.points)


@dataclass(frozen=True)
class ConceptFile:
    """A concept saved by ``persam personalize`` (``.persam``)."""

    path: str = field(metadata=FILE)


@dataclass(frozen=True)
class GivenConcept:
    """A concept the caller already holds (the web app's, Label Studio's); ``key`` identifies it
    (``Concept.key()``) so that runs of two concepts never share finished photos."""

    key: str


@dataclass(frozen=True)
class MethodSpec:
    """The method and its switches (the defaults are the paper's).

    Attributes:
        finetune: PerSAM-F (fit the two mask-scale weights) instead of training-free PerSAM.
        without: components switched off (``persam.session.options.COMPONENTS``).
        prior: "similarity" (PerSAM's point) or "part-aware" (P2SAM).
        parts: (min, max) part counts of the part-aware prior; None = 1..5.
        max_instances: above 1, every instance up to this many (a label map per photo).
        detect_absent: an empty mask when the object is not in the photo.
        presence_threshold: the similarity below which the object is absent (implies ``detect_absent``).
    """

    finetune: bool = False
    without: tuple[str, ...] = ()
    prior: str = "similarity"
    parts: tuple[int, int] | None = None
    max_instances: int = 1
    detect_absent: bool = False
    presence_threshold: float | None = None

    @property
    def absent(self) -> bool:
        """Whether absence is detected (a presence threshold implies it)."""
        return self.detect_absent or self.presence_threshold is not None


@dataclass(frozen=True)
class OutputSpec:
    """What is written, and where.

    Attributes:
        folder: the output folder (masks, overlays, ``manifest.json``, ``annotations.json``).
        format: "png" (masks only) or "coco" (also ``annotations.json`` with RLE masks).
        overlay: also write ``<stem>_overlay.jpg``.
        overwrite: segment every photo again instead of reusing an earlier run's.
    """

    folder: str = field(metadata=not_resumed("the folder is where finished photos are looked for"))
    format: Literal["png", "coco"] = "png"
    overlay: bool = False
    overwrite: bool = field(default=False, metadata=not_resumed("it decides whether to reuse, not what is made"))


@dataclass(frozen=True)
class ExecutorSpec:
    """Where the photos are segmented: in this process (``workers`` groups at a time; None = 2 on a CPU
    with 2+ cores, else 1; each group ``batch`` photos decoded together, None = ``persam.engine.batches.
    default_batch``), or on Ray (``ray``)."""

    workers: int | None = None
    batch: int | None = None
    ray: RayOptions | None = None


@dataclass(frozen=True)
class JobSpec:
    """One run: the concept, the photos, the method, the output, the model and the executor.

    Attributes:
        concept: where the concept comes from.
        output: what is written, and where.
        targets: photo files and folders (searched recursively); empty with ``index``.
        index: an album index (an ``.idx`` file, a store folder or URI) whose photos are the targets.
        method: the method and its switches.
        model: the model options.
        executor: this process or Ray.
        max_pixels: the largest photo read (width x height), None = the reader's default, 0 = no limit.
        quiet: no summary line.
    """

    concept: References | ConceptFile | GivenConcept
    output: OutputSpec
    targets: tuple[str, ...] = field(default=(), metadata=not_resumed("each photo is matched by its bytes"))
    index: str | None = None
    method: MethodSpec = field(default_factory=MethodSpec)
    model: ModelSpec = field(default_factory=lambda: ModelSpec("vit_t"))
    executor: ExecutorSpec = field(
        default_factory=ExecutorSpec,
        metadata=not_resumed("masks agree across executors within the documented tolerance"),
    )
    max_pixels: int | None = field(default=None, metadata=not_resumed("a photo over it is refused, not changed"))
    quiet: bool = field(default=False, metadata=not_resumed("it only silences the summary"))
