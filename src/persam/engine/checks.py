"""Every refusal of a run's options, once: ``check_spec`` before any model loads, for every front end.

The method's own rules (prior and part counts, components, instances, presence) are
``persam.session.options``'s, which the Python API calls too; this module adds the rules of a run: where
the concept comes from, the photos, the output, the model and the executor. Each refusal raises a
``persam.errors`` type with a neutral message and ``field`` naming the spec field (``masks``, ``index``,
``workers``...); the command line prints the field's flag in front.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from persam.engine.spec import (
    ConceptFile,
    ExecutorSpec,
    GivenConcept,
    JobSpec,
    MethodSpec,
    ModelSpec,
    RayOptions,
    References,
)
from persam.errors import MissingExtraError, MissingInputError, OptionsError, OutputError, PersamError
from persam.session.options import check_instances, check_presence, check_prior, check_without

#: Optional packages: import name -> the extra of persam that installs it.
EXTRAS = {
    "pycocotools": "coco",
    "av": "video",
    "ray": "ray",
    "pyarrow": "ray",
    "label_studio_sdk": "label-studio",
    "ot": "matcher",
    "scipy": "matcher",
}


def require_extra(module: str, needed_by: str, field: str | None = None) -> None:
    """``MissingExtraError`` with the install command when ``module`` (an optional dependency) is missing."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f'{needed_by} needs {module}, which is not installed: pip install "persam[{EXTRAS[module]}]"',
            field=field,
        )


def check_output_folder(path: str | os.PathLike, field: str = "output") -> Path:
    """``path`` as an output folder: refused when it is a file, lies under a file, or its nearest existing
    folder is not writable (it is created later, when the run writes)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OptionsError(
            f"{folder}: is a file, not a folder; give a folder path (it is made if missing)", field=field
        )
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OptionsError(f"{folder}: {parent} is a file, so no folder can be made under it", field=field, path=folder)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: {parent} is not writable; give a folder you can write to", field=field)
    return folder


def check_inputs_exist(paths: Iterable[tuple[str | os.PathLike | None, str]]) -> None:
    """``MissingInputError`` naming the first ``(path, field)`` whose path does not exist (None is skipped)."""
    for path, field in paths:
        if path is not None and not Path(path).exists():
            raise MissingInputError(f"{path}: no such file or folder; check the path", path=path, field=field)


def check_method(method: MethodSpec, learning: bool) -> MethodSpec:
    """The method options checked (``learning``: the concept is learned in this run)."""
    parts = check_prior(method.prior, method.parts, method.finetune) if learning else method.parts
    without = check_without(method.without)
    check_instances(method.max_instances, method.prior)
    check_presence(method.detect_absent, method.presence_threshold)
    return replace(method, parts=parts, without=without)


def check_references(refs: References) -> None:
    """Reference photos with one mask each, or one photo with prompts (never both)."""
    if not refs.photos:
        raise OptionsError(
            "no reference given: give a reference photo with its mask, a box or clicks (or a saved concept)",
            field="references",
        )
    if refs.prompted or refs.point_labels:
        if refs.masks:
            raise OptionsError("give either reference masks or prompts (SAM makes the mask), not both", field="masks")
        if len(refs.photos) != 1 or Path(refs.photos[0]).is_dir():
            raise OptionsError(
                f"prompts mark the object in one reference photo, got {len(refs.photos)} "
                f"{'folder' if Path(refs.photos[0]).is_dir() else 'photos'}; give one photo, or masks",
                field="references",
            )
        if refs.label is not None:
            raise OptionsError("a label picks a value of reference masks; leave it unset with prompts", field="label")
        if len(refs.point_labels) != len(refs.points):
            raise OptionsError("give one label (1 object, 0 background) per point", field="points")
        if refs.box is None and not any(refs.point_labels):
            raise OptionsError("background clicks alone mark no object; add a click on it or a box", field="points")
        check_inputs_exist([(refs.photos[0], "references")])
        from persam.io import load_image
        from persam.session.prompts import Prompts

        photo = refs.photos[0]
        try:  # coordinates outside the photo fail here, before the model loads
            Prompts.checked(
                load_image(photo).shape[:2],
                points_xy=list(refs.points) or None,
                point_labels=list(refs.point_labels) or None,
                box_xyxy=refs.box,
            )
        except PersamError as exc:
            raise exc.reworded(f"{photo}: {exc}") from None
        return
    if len(refs.photos) != len(refs.masks):
        raise OptionsError(
            f"got {len(refs.photos)} reference photos and {len(refs.masks)} masks; give one mask per photo "
            "(or, for one photo, a box or clicks)",
            field="masks",
        )


LEARNING = ("finetune", "without", "prior", "parts")
#: The ``References`` fields, as errors name them.
REFERENCE_FIELDS = {"photos": "references", "masks": "masks", "box": "box", "points": "points", "label": "label"}


def choose_concept(concept_file: str | None, refs: References) -> References | ConceptFile:
    """The concept's source when a front end offers both ways: a concept file, or reference photos
    (``refs``, possibly empty); giving both is refused (a concept file is already learned)."""
    if concept_file is None:
        return refs
    given = [REFERENCE_FIELDS[name] for name in REFERENCE_FIELDS if getattr(refs, name) not in ((), None)]
    if given:
        raise OptionsError(
            f"{', '.join(given)} apply when learning from reference photos; {concept_file} is already learned: "
            "give either the concept or the references",
            field=tuple(given),
        )
    return ConceptFile(concept_file)


def check_concept(source: References | ConceptFile | GivenConcept, method: MethodSpec) -> MethodSpec:
    """The concept's source against the method options; returns the method options, checked."""
    if isinstance(source, References):
        check_references(source)
        check_inputs_exist([*((p, "references") for p in source.photos), *((m, "masks") for m in source.masks)])
        return check_method(method, learning=True)
    if isinstance(source, ConceptFile | GivenConcept):
        default = MethodSpec()
        given = [name for name in LEARNING if getattr(method, name) != getattr(default, name)]
        if given:
            what = f"{source.path}" if isinstance(source, ConceptFile) else "the given concept"
            raise OptionsError(
                f"{', '.join(given)} apply when a concept is learned; {what} is already learned: leave "
                f"{'it' if len(given) == 1 else 'them'} unset, or learn from reference photos instead",
                field=tuple(given),
            )
        if isinstance(source, ConceptFile):
            check_inputs_exist([(source.path, "concept")])
        return check_method(method, learning=False)
    raise TypeError(f"JobSpec.concept must be References, ConceptFile or GivenConcept, got {type(source).__name__}")


def check_ray(ray: RayOptions) -> RayOptions:
    """The Ray options' values (at least 1 worker and photo per batch, at least 0 GPUs), and Ray installed;
    for every command that runs on Ray (``persam segment``, ``persam index``)."""
    for name in ("workers", "gpus_per_worker", "batch_size"):
        value = getattr(ray, name)
        least = 0 if name == "gpus_per_worker" else 1
        if value is not None and value < least:
            raise OptionsError(
                f"Ray {name.replace('_', ' ')} must be at least {least}, got {value:g}", field=f"ray_{name}"
            )
    require_extra("ray", "Ray", field="ray")
    return ray


def check_executor(spec: JobSpec) -> None:
    """Local workers or Ray, with the index the Ray path reads."""
    executor: ExecutorSpec = spec.executor
    if executor.workers is not None and executor.workers < 1:
        raise OptionsError(f"workers must be at least 1, got {executor.workers}", field="workers")
    if executor.batch is not None and executor.batch < 1:
        raise OptionsError(f"batch must be at least 1 photo, got {executor.batch}", field="batch")
    ray = executor.ray
    if ray is None:
        return
    if executor.workers is not None:
        raise OptionsError("local workers have no effect on Ray (its pool size is the Ray workers)", field="workers")
    if executor.batch is not None:
        raise OptionsError("--batch is the local executor's; on Ray use --ray-batch-size", field="batch")
    check_ray(ray)
    if spec.index is None:
        raise OptionsError(
            "Ray segments the photos of an embedding store: index them into a store folder first", field="ray"
        )
    from persam.session.store import is_store

    if not is_store(spec.index):
        raise OptionsError(
            f"{spec.index}: Ray reads an embedding store folder, not an SQLite index file; index the photos "
            "into a folder",
            field="index",
        )


def check_model(model: ModelSpec) -> ModelSpec:
    """The model options that contradict each other."""
    if model.random_weights and model.checkpoint:
        raise OptionsError(
            f"{model.checkpoint}: a checkpoint has no effect with random weights (nothing is loaded); drop one",
            field=("checkpoint", "random_weights"),
        )
    return model


def check_spec(spec: JobSpec) -> JobSpec:
    """Every refusal of ``spec`` (no model is loaded); returns the spec with its values normalised
    (components sorted, part counts as ints).

    Raises:
        persam.errors.PersamError: the first rule broken, with ``field`` set.
    """
    method = check_concept(spec.concept, spec.method)
    if spec.index is not None and spec.targets:
        raise OptionsError(
            f"give either photos or an album index ({spec.index}: its photos are the targets), not both", field="index"
        )
    if spec.index is None and not spec.targets:
        raise OptionsError("no photos to segment: give photos or folders, or an album index", field="targets")
    model = check_model(spec.model)
    if spec.index is not None and isinstance(spec.concept, ConceptFile | GivenConcept):
        for name, default in (("precision", "fp32"), ("runtime", "torch")):
            if getattr(model, name) != default:
                raise OptionsError(
                    f"the encoder's {name} has no effect with an index and a learned concept (nothing is encoded: "
                    "the index holds the embeddings); leave it unset, or index the photos with it",
                    field=name,
                )
    if spec.output.format not in ("png", "coco"):
        raise OptionsError(f"unknown output format {spec.output.format!r}; choose png or coco", field="format")
    if spec.output.format == "coco":
        require_extra("pycocotools", "the COCO format", field="format")
    check_executor(spec)
    check_output_folder(spec.output.folder)
    local_index = spec.index if spec.index is not None and "://" not in spec.index else None
    check_inputs_exist(
        [(local_index, "index"), (model.checkpoint, "checkpoint"), *((t, "targets") for t in spec.targets)]
    )
    if local_index is not None and Path(local_index).is_file() and Path(local_index).stat().st_size == 0:
        raise OptionsError(f"{local_index}: empty file, not an album index; build the index first", field="index")
    if spec.index is not None and spec.executor.ray is None:
        from persam.session.store import is_store

        if is_store(spec.index):
            require_extra("pyarrow", f"the embedding store {spec.index}", field="index")
    return replace(spec, method=method)
