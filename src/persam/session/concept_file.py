"""Saving and loading concepts (``.persam`` files): safetensors, no pickle.

A concept file holds everything segmenting needs except the model: the target
features, PerSAM-F's weights, the presence statistics and threshold, the
settings, the part-aware prior's reference cells and prototypes (one tensor
per part count; version 2 files), and which backend and checkpoint (SHA-256)
made it. Tensors go in
the safetensors body; the rest is JSON in its metadata, with a SHA-256 of
the tensors so that a damaged file is refused rather than half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from persam.errors import IncompatibleError, InputError, MissingInputError
from persam.io.atomic import atomic_save
from persam.method.matcher import MatcherReference, MatcherSettings
from persam.method.parts import PartPrior
from persam.method.presence import PresenceStats
from persam.method.settings import PersamSettings
from persam.method.target import TargetFeatures
from persam.session.photo import Concept, PersamModel

FORMAT = "persam-concept"
VERSION = 1
#: Files with the part-aware prior are version 2 (a version-1 reader refuses them).
PARTS_VERSION = 2
#: Files with the matcher prior (DINOv2 reference patches and cells) are version 3.
MATCHER_VERSION = 3


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _contents(concept: Concept) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a concept file."""
    tensors = {"target_mean": concept.target.mean.float().cpu(), "target_max": concept.target.max.float().cpu()}
    if concept.weights is not None:
        tensors["weights"] = concept.weights.float().cpu()
    if concept.parts is not None:
        tensors["part_cells"] = concept.parts.cells.float().cpu()
        for n, protos in concept.parts.prototypes.items():
            tensors[f"part_prototypes_{n}"] = protos.float().cpu()
    if concept.matcher is not None:
        tensors["matcher_features"] = concept.matcher.features.float().cpu()
        tensors["matcher_cells"] = concept.matcher.pooled.to(torch.uint8).cpu()
    backend = concept.model.backend
    version = MATCHER_VERSION if concept.matcher is not None else VERSION if concept.parts is None else PARTS_VERSION
    meta = {
        "format": FORMAT,
        "version": version,
        "backend": backend.name,
        "checkpoint_sha256": backend.checkpoint_sha256,
        "method": concept.method,
        "cell_count": concept.target.count,
        "settings": concept.settings.to_dict(),
        "presence": None
        if concept.presence is None
        else {"fg_mean": concept.presence.fg_mean, "bg_max": concept.presence.bg_max},
        "presence_threshold": concept.presence_threshold,
        "prior": concept.prior,
        "parts": None
        if concept.parts is None
        else {
            "range": list(concept.parts.parts),
            "skipped": list(concept.parts.skipped),
            "counts": sorted(concept.parts.prototypes),
        },
        "matcher": None if concept.matcher is None else matcher_meta(concept.matcher),
        "tensors_sha256": _digest(tensors),
    }
    return tensors, meta


def concept_key(concept: Concept) -> str:
    """SHA-256 (hex) identifying ``concept``: what its file would hold (model, method, settings, tensors)."""
    _, meta = _contents(concept)
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8")).hexdigest()


def save_concept(concept: Concept, path: str | os.PathLike) -> Path:
    """Write ``concept`` to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    tensors, meta = _contents(concept)
    out = Path(path)
    atomic_save(out, lambda tmp: save_file(tensors, tmp, metadata={"persam": json.dumps(meta)}))
    return out


def read_concept_metadata(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a concept file, verified.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a concept file, or damaged.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    file = Path(path)
    if not file.is_file():
        raise MissingInputError(
            f"{file}: no such concept file; create one with `persam personalize ... -o {file.name}`"
        )
    try:
        with safe_open(str(file), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("persam")
        tensors = load_file(str(file))
        meta = json.loads(raw) if raw else None
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{file}: damaged or not a persam concept file ({exc.__class__.__name__}); save the concept again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{file}: not a persam concept file; create one with `persam personalize`")
    if meta.get("version") not in (VERSION, PARTS_VERSION, MATCHER_VERSION):
        raise InputError(
            f"{file}: concept format version {meta.get('version')} is not supported by this persam; save it again"
        )
    if meta.get("tensors_sha256") != _digest(tensors):
        raise InputError(f"{file}: concept file is damaged (checksum mismatch); save the concept again")
    return meta, tensors


def matcher_meta(ref: MatcherReference) -> dict:
    """The matcher prior's JSON part: its DINOv2 and settings."""
    return {"backbone": ref.backbone, "backbone_sha256": ref.backbone_sha256, "settings": ref.settings.to_dict()}


def load_matcher(info: dict, tensors: dict[str, torch.Tensor], model: PersamModel, path) -> MatcherReference:
    """The matcher prior of a concept file, checked against the model's DINOv2."""
    from persam.session.matcher_prior import check_backbone

    try:
        raw = dict(info["settings"])
        raw["sample_range"] = tuple(raw["sample_range"])
        dev = model.backend.device
        ref = MatcherReference(
            features=tensors["matcher_features"].to(dev),
            pooled=tensors["matcher_cells"].bool().to(dev),
            backbone=info["backbone"],
            backbone_sha256=info["backbone_sha256"],
            settings=MatcherSettings(**raw),
        )
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: concept file lacks the matcher prior's {exc}; save the concept again") from None
    check_backbone(model, ref, str(path))
    return ref


#: The metadata fields ``load_concept`` reads and the JSON types each may have (None: may be absent). The
#: tensors have a checksum, the metadata has not: a damaged field is refused here, not met later.
_FIELDS: dict[str, tuple[type, ...]] = {
    "backend": (str,),
    "checkpoint_sha256": (str,),
    "cell_count": (int,),
    "settings": (dict,),
    "presence": (dict, type(None)),
    "presence_threshold": (int, float, type(None)),
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_fields(meta: dict, tensors: dict[str, torch.Tensor], path) -> None:
    """Raise ``InputError`` naming ``path`` when a field ``load_concept`` reads is missing or of another type."""
    from dataclasses import fields

    def damaged(what: str) -> InputError:
        return InputError(f"{path}: concept file is damaged ({what}); save the concept again", path=path)

    for name, types in _FIELDS.items():
        if name not in meta or not isinstance(meta[name], types) or isinstance(meta[name], bool):
            raise damaged(f"field {name!r}")
    for name in ("target_mean", "target_max"):
        if name not in tensors:
            raise damaged(f"tensor {name!r} is missing")
    kinds = {f.name: bool if f.type in (bool, "bool") else float for f in fields(PersamSettings)}
    for key, value in meta["settings"].items():
        kind = kinds.get(key)
        if not (isinstance(value, bool) if kind is bool else kind is float and _is_number(value)):
            raise damaged(f"setting {key!r}")
    presence = meta["presence"]
    if presence is not None and (set(presence) != {"fg_mean", "bg_max"} or not all(map(_is_number, presence.values()))):
        raise damaged("field 'presence'")
    for name in ("parts", "matcher"):
        if not isinstance(meta.get(name), (dict, type(None))):
            raise damaged(f"field {name!r}")


def load_concept(path: str | os.PathLike, model: PersamModel) -> Concept:
    """Load a concept saved with ``save_concept`` for use with ``model``.

    Raises:
        ValueError: damaged file, or made with another backend or checkpoint.
    """
    meta, tensors = read_concept_metadata(path)
    check_fields(meta, tensors, path)
    backend = model.backend
    if meta["backend"] != backend.name:
        raise IncompatibleError(
            f"{path}: concept was made with model {meta['backend']!r}, not {backend.name!r}; "
            f"pass --model {meta['backend']}"
        )
    if meta["checkpoint_sha256"] != backend.checkpoint_sha256:
        raise IncompatibleError(
            f"{path}: concept was made with another checkpoint (SHA-256 {meta['checkpoint_sha256'][:12]}…, "
            f"loaded {backend.checkpoint_sha256[:12]}…); pass the --checkpoint it was made with"
        )
    dev = backend.device
    target = TargetFeatures(
        mean=tensors["target_mean"].to(dev), max=tensors["target_max"].to(dev), count=int(meta["cell_count"])
    )
    presence = None if meta["presence"] is None else PresenceStats(**meta["presence"])
    parts = None
    if meta.get("parts") is not None:
        info = meta["parts"]
        try:
            parts = PartPrior(
                cells=tensors["part_cells"].to(dev),
                prototypes={int(n): tensors[f"part_prototypes_{n}"].to(dev) for n in info["counts"]},
                parts=tuple(info["range"]),
                skipped=tuple(info["skipped"]),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"{path}: concept file lacks the part-aware prior's {exc}; save the concept again"
            ) from None
    found = None if meta.get("matcher") is None else load_matcher(meta["matcher"], tensors, model, path)
    return Concept(
        matcher=found,
        model=model,
        target=target,
        weights=tensors.get("weights"),
        settings=PersamSettings(**meta["settings"]),
        presence=presence,
        presence_threshold=meta["presence_threshold"],
        parts=parts,
    )
