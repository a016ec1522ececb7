"""One Label Studio project as persam works on it: its photos on disk, their embeddings in an album index,
each label's concept learned from the submitted annotations, and the masks of tasks made by the job engine.

Files under the work folder ``work`` (``Workspace``):
    ``photos/project-<P>/task-<T>-<h>.<ext>``  the task's photo, fetched once (``h``: a hash of its URL)
    ``album.idx``                              their embeddings (float32: masks as a direct run's)
    ``runs/project-<P>/<label>/``              the job engine's output folder per label (masks, manifest)
Concepts (``ConceptStore``): ``<concepts>/project-<P>/<label>.persam``, one per project and label.

A label's references are the regions of that label in the project's submitted annotations (cancelled
ones left out): brush and polygon regions are masks, a rectangle is a box prompt (SAM makes the mask from
the photo's stored embedding); the regions of one annotation are one reference mask (their union), and
several annotated tasks are several references of one concept.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np

from persam.engine.spec import MethodSpec, ModelSpec
from persam.errors import InputError
from persam.labelstudio.config import LabelingConfig
from persam.labelstudio.regions import Region, mask_results, read_regions

#: photo suffixes kept from a URL (anything else is stored as .img; the reader goes by content)
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
#: the method options that decide how a concept is learned (the rest decide how it segments)
LEARNING = ("finetune", "without", "prior", "parts")


def safe_name(label: str) -> str:
    """A file name for a label: its letters, digits, ``.``, ``_`` and ``-`` (others as ``_``), then 8 hex of its
    SHA-1 so that labels differing in other characters never share a file."""
    plain = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")[:60] or "label"
    return f"{plain}-{hashlib.sha1(label.encode('utf-8')).hexdigest()[:8]}"


def model_version(concept) -> str:
    """A concept's ``model_version`` in Label Studio: ``persam-`` and 16 hex of the concept's hash."""
    from persam.session.concept_file import concept_key

    return f"persam-{concept_key(concept)[:16]}"


def task_id(task: object) -> int:
    """A task's id (InputError when it has none)."""
    value = task.get("id") if isinstance(task, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError("a task has no id", field="tasks")
    return value


def submitted(task: dict) -> list[dict]:
    """The task's submitted annotations (cancelled ones left out)."""
    found = task.get("annotations") or []
    return [a for a in found if isinstance(a, dict) and not a.get("was_cancelled")]


def regions_of(task: dict, label: str) -> list[Region]:
    """The regions of ``label`` (brush, polygon, rectangle) in the task's submitted annotations."""
    out = []
    for annotation in submitted(task):
        out += [r for r in read_regions(annotation.get("result") or []) if r.label == label and r.kind != "keypoint"]
    return out


@dataclass(frozen=True)
class ConceptStore:
    """Where concepts are kept: one ``.persam`` file per project and label under ``folder``."""

    folder: Path

    def path(self, project: int, label: str) -> Path:
        return self.folder / f"project-{project}" / f"{safe_name(label)}.persam"

    def load(self, project: int, label: str, model):
        """The saved concept of ``label``, or None."""
        from persam.session.concept_file import load_concept

        path = self.path(project, label)
        return load_concept(path, model) if path.is_file() else None

    def save(self, project: int, label: str, concept) -> Path:
        from persam.session.concept_file import save_concept

        path = self.path(project, label)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_concept(concept, path)


class Workspace:
    """The photos and embeddings of Label Studio projects, and the job engine's output folders.

    ``fetch`` downloads with the project's ``client``; calls from several threads are serialised (``lock``).
    """

    def __init__(self, folder: Path, model, spec: ModelSpec) -> None:
        self.folder = Path(folder).resolve()
        self.model = model
        self.spec = spec
        self.album_path = self.folder / "album.idx"
        self.lock = threading.RLock()
        self.encoded_count = 0  # photos encoded by this workspace (a run's summary; the tests count it)

    def photo_path(self, project: int, task: dict, config: LabelingConfig) -> tuple[Path, str]:
        url = (task.get("data") or {}).get(config.value) if isinstance(task.get("data"), dict) else None
        if not isinstance(url, str) or not url:
            raise InputError(f"task {task_id(task)}: no photo URL under {config.value!r} in its data", field="tasks")
        suffix = PurePosixPath(urlparse(url).path).suffix.lower()
        suffix = suffix if suffix in SUFFIXES else ".img"
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:10]
        return self.folder / "photos" / f"project-{project}" / f"task-{task_id(task)}-{digest}{suffix}", url

    def photos(self, client, project: int, tasks: list[dict], config: LabelingConfig) -> dict[int, Path]:
        """Each task's photo on disk (fetched with ``client`` when not there yet) and in the album index."""
        out = {}
        for task in tasks:
            path, url = self.photo_path(project, task, config)
            if not path.is_file():
                if client is None:
                    raise InputError(
                        f"task {task_id(task)}: its photo {url} cannot be fetched: no Label Studio URL and API key "
                        "(give them at the backend's setup or in LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)"
                    )
                client.fetch(url, path)
            out[task_id(task)] = path
        self.index(list(out.values()))
        return out

    def index(self, paths: list[Path]) -> int:
        """Encode the photos the album index does not hold yet; how many were encoded."""
        from persam.jobs.indexing import encode_into
        from persam.session.store import open_album

        with self.lock:
            album = open_album(self.album_path)
            try:
                album.bind(self.model.backend)
                done = encode_into(album, self.model, paths, "float32")
            finally:
                album.close()
        if done.skipped:
            path, reason = done.skipped[0]
            raise InputError(reason if path in reason else f"{path}: {reason}", path=path)
        self.encoded_count += done.encoded
        return done.encoded

    def encoded(self, path: Path):
        """The stored embedding of a photo (``EncodedImage``)."""
        from persam.session.store import open_album

        album = open_album(self.album_path, create=False)
        try:
            return album.encoded(path, self.model.backend)
        finally:
            album.close()

    def learn(self, client, project: int, config: LabelingConfig, tasks: list[dict], label: str, method: MethodSpec):
        """The concept of ``label`` learned from the tasks' submitted annotations, and how many references it
        has; (None, 0) when no task has a region of that label."""
        from persam.engine.concept import learn_masks

        annotated = [(t, regions) for t in tasks if (regions := regions_of(t, label))]
        if not annotated:
            return None, 0
        paths = self.photos(client, project, [t for t, _ in annotated], config)
        photos, masks, names = [], [], []
        for task, regions in annotated:
            encoded = self.encoded(paths[task_id(task)])
            mask = np.zeros(encoded.geometry.original_hw, dtype=bool)
            for region in regions:
                if region.shape != mask.shape:
                    raise InputError(
                        f"task {task_id(task)}: a region of {label!r} is of a {region.shape[1]}x{region.shape[0]} "
                        f"photo, the photo is {mask.shape[1]}x{mask.shape[0]}",
                        field="result",
                    )
                if region.box is not None:
                    region_mask = self.model.mask_from_prompts(encoded, box_xyxy=region.box).mask
                else:
                    region_mask = region.mask
                mask |= region_mask
            photos.append(encoded)
            masks.append(mask)
            boxes = any(region.box is not None for region in regions)
            made = ", with SAM's mask for its rectangle" if boxes else ""
            names.append(f"task {task_id(task)}: the annotation of {label!r}{made}")
        return learn_masks(self.model, photos, masks, method, names), len(photos)

    def segment(
        self,
        project: int,
        config: LabelingConfig,
        label: str,
        concept,
        paths: dict[int, Path],
        method: MethodSpec,
        progress=None,
    ) -> dict[int, tuple[list[dict], float] | str]:
        """Find ``concept`` in the photos ``paths`` (task id -> photo in the album index) on the job engine;
        per task, (prediction regions of ``label``, the prediction's score) or the reason it was skipped.
        ``progress`` wraps the photos as the job engine segments them (``persam.engine.job.Progress``)."""
        from dataclasses import replace

        from persam.engine.job import Source
        from persam.engine.runner import run_job
        from persam.engine.spec import ExecutorSpec, GivenConcept, JobSpec, OutputSpec
        from persam.io import read_label_map
        from persam.session.concept_file import concept_key

        if not paths:
            return {}
        out = self.folder / "runs" / f"project-{project}" / safe_name(label)
        segmenting = replace(method, **{name: getattr(MethodSpec(), name) for name in LEARNING})
        spec = JobSpec(
            concept=GivenConcept(concept_key(concept)),
            output=OutputSpec(str(out)),
            index=str(self.album_path),
            method=segmenting,
            model=self.spec,
            executor=ExecutorSpec(workers=1),
            quiet=True,
        )
        sources = [Source(path, f"task {tid}", Path(f"task-{tid}")) for tid, path in paths.items()]
        with self.lock:
            more = {} if progress is None else {"progress": progress}
            result = run_job(spec, model=self.model, concept=concept, sources=sources, **more)
        control = config.output_for(label)
        found: dict[int, tuple[list[dict], float] | str] = {}
        for (tid, _), entry in zip(paths.items(), result.outputs.entries):
            if entry["status"] != "written":
                found[tid] = entry.get("reason", entry["status"])
                continue
            labels = read_label_map(result.outputs.root / entry["mask"])
            regions, scores = [], entry["scores"]
            if entry["present"]:
                values = [1] if method.max_instances == 1 else range(1, entry["instances"] + 1)
                for k in values:
                    mask = labels > 0 if method.max_instances == 1 else labels == k
                    regions += mask_results(mask, label, scores[k - 1], control, config)
            score = max((r["score"] for r in regions), default=0.0)
            found[tid] = (regions, score)
        return found
