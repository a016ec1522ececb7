"""Pre-annotating a Label Studio project: each label's concept from its submitted annotations, predictions
for the tasks without an annotation of that label.

Per label: the references are the submitted annotations' regions of it (``persam.labelstudio.project``);
the tasks to predict are those without such an annotation and without a prediction of the same
``model_version`` (the concept's hash) — unless ``overwrite``, which replaces those predictions. Photos are
fetched once and encoded once (the album index of the work folder), so a second run, for another label or
with more references, encodes only photos it has not seen. The masks are made on the job engine
(``Workspace.segment``); each task gets one prediction per label (brush RLE, polygons or rectangles as the
config's tools allow; no region where the object is absent, one per instance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from persam.engine.spec import MethodSpec
from persam.errors import InputError, OptionsError
from persam.labelstudio.config import parse_config
from persam.labelstudio.project import ConceptStore, Workspace, model_version, regions_of, task_id


@dataclass(frozen=True)
class AnnotateOptions:
    """What ``annotate`` does.

    Attributes:
        project: the Label Studio project id.
        labels: the labels to pre-annotate (empty: every label of the config with a submitted annotation).
        method: how concepts are learned and segment (``max_instances``, ``detect_absent``...).
        overwrite: replace predictions of the same ``model_version`` (default: skip those tasks).
    """

    project: int
    labels: tuple[str, ...] = ()
    method: MethodSpec = field(default_factory=MethodSpec)
    overwrite: bool = False


@dataclass
class LabelCounts:
    """What was done for one label."""

    label: str
    version: str = ""
    references: int = 0
    predicted: int = 0
    regions: int = 0
    kept: int = 0
    replaced: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class AnnotateResult:
    """What a run did: per label, and the photos encoded."""

    labels: list[LabelCounts]
    encoded: int
    tasks: int

    def summary(self) -> str:
        parts = []
        for c in self.labels:
            if not c.references:
                parts.append(f"{c.label!r}: no submitted annotation, nothing predicted")
                continue
            replaced = f", {c.replaced} replaced" if c.replaced else ""
            skipped = f", {len(c.skipped)} skipped" if c.skipped else ""
            parts.append(
                f"{c.label!r} ({c.version}, {c.references} reference(s)): {c.predicted} task(s) predicted "
                f"({c.regions} region(s){replaced}), {c.kept} already predicted{skipped}"
            )
        return (
            f"persam label-studio annotate: {self.tasks} task(s); " + "; ".join(parts) + f"; {self.encoded} photo(s) "
            "encoded (--overwrite redoes the tasks already predicted)"
        )

    @property
    def status(self) -> int:
        return 1 if any(c.skipped for c in self.labels) else 0


def annotate(
    client,
    workspace: Workspace,
    concepts: ConceptStore,
    options: AnnotateOptions,
    warn: Callable[[str], None] = lambda line: None,
    progress: Callable = lambda items, total, what: items,
) -> AnnotateResult:
    """Pre-annotate ``options.project`` through ``client`` (``persam.labelstudio.client.Client``).

    Raises:
        persam.errors.PersamError: the project cannot be read, its config has no region tool on an image, a
            label asked for is not in it, a reference cannot be used.
    """
    config = parse_config(client.label_config(options.project))
    config.output()  # a config persam can write predictions with
    asked = options.labels or config.labels
    for label in asked:
        if label not in config.labels:
            raise OptionsError(
                f"label {label!r} is not in project {options.project}'s labeling config; labels: {list(config.labels)}",
                field="label",
            )
    tasks = client.tasks(options.project)
    before = workspace.encoded_count
    counts = []
    for label in asked:
        c = LabelCounts(label)
        counts.append(c)
        concept, c.references = workspace.learn(client, options.project, config, tasks, label, options.method)
        if concept is None:
            if options.labels:
                raise OptionsError(
                    f"label {label!r} has no submitted annotation in project {options.project}; annotate one task "
                    "with it first",
                    field="label",
                )
            continue
        c.version = model_version(concept)
        concepts.save(options.project, label, concept)
        todo, old = [], {}
        for task in tasks:
            if regions_of(task, label):
                continue
            same = [p for p in task.get("predictions") or [] if p.get("model_version") == c.version]
            if same and not options.overwrite:
                c.kept += 1
                continue
            old[task_id(task)] = [p["id"] for p in same]
            todo.append(task)
        paths = {}
        for task in progress(todo, len(todo), f"fetch {label}"):
            try:
                paths.update(workspace.photos(client, options.project, [task], config))
            except InputError as exc:  # this task's photo cannot be fetched or read: the others go on
                c.skipped.append(f"task {task_id(task)}: {exc}")
                warn(f"skipped task {task_id(task)} ({label!r}): {exc}")
        found = workspace.segment(options.project, config, label, concept, paths, options.method, progress)
        for tid, got in found.items():
            if isinstance(got, str):
                c.skipped.append(f"task {tid}: {got}")
                warn(f"skipped task {tid} ({label!r}): {got}")
                continue
            regions, score = got
            client.create_prediction(tid, regions, score, c.version)
            for prediction in old.get(tid, []):
                client.delete_prediction(prediction)
                c.replaced += 1
            c.predicted += 1
            c.regions += len(regions)
    return AnnotateResult(counts, workspace.encoded_count - before, len(tasks))


def default_work_folder() -> Path:
    """The default work folder: ``label-studio`` in persam's cache (``PERSAM_HOME`` when set)."""
    import os

    home = os.environ.get("PERSAM_HOME")
    if home:
        return Path(home) / "label-studio"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("persam")) / "label-studio"
