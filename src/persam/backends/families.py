"""Which model a checkpoint holds, told from its state-dict keys and shapes.

A checkpoint of another family than the ``--model`` asked for fails the
strict key check with thousands of missing and unexpected keys. This module
measures the image encoder's key signature (``persam.backends.models.KeySignature``:
the trunk, ``image_encoder.blocks`` of SAM's ViTs, ``image_encoder.layers``
of TinyViT, ``image_encoder.trunk`` of SAM 2.1's Hiera, with its depth,
width and patch kernel) and looks it up in the model table, so an error can
say which ``--model`` to pass in one line, and ``persam models add`` can tell
which model a file is. No torch import: only ``.shape`` is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from persam.backends import models
from persam.backends.models import KeySignature, ModelEntry


@dataclass(frozen=True)
class CheckpointFamily:
    """What a state dict looks like.

    Attributes:
        label: words for the user, e.g. ``"SAM ViT-H (32 blocks of width 1280)"``.
        model_type: the persam model type that loads it (``"vit_h"``), or None
            when none does (an unknown size, or an unsupported family).
        supported: False for families persam has no backend for (SAM 2.0,
            HQ-SAM, an image encoder alone).
    """

    label: str
    model_type: str | None
    supported: bool = True


def _indices(keys: list[str], prefix: str) -> set[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in keys if (m := pattern.match(k))}


def _dim(state: Mapping[str, Any], key: str, axis: int = 0) -> int | None:
    shape = getattr(state.get(key), "shape", None)
    return int(shape[axis]) if shape is not None and len(shape) > axis else None


def _blocks(keys: list[str], prefix: str) -> int:
    """Number of distinct indices N of ``prefix<N>.`` among ``keys``."""
    return len(_indices(keys, prefix))


def _tinyvit_blocks(keys: list[str]) -> int:
    pattern = re.compile(r"image_encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
    return len({m.groups() for k in keys if (m := pattern.match(k))})


def key_signature(state: Mapping[str, Any]) -> KeySignature | None:
    """The image encoder's key signature (trunk, blocks, width, patch kernel) of a state dict, or None.

    Args:
        state: parameter names (official layout: ``image_encoder.*``) to anything with ``.shape``.
    """
    keys = list(state)
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        width = _dim(state, "image_encoder.trunk.patch_embed.proj.weight") or 0
        return KeySignature("hiera", _blocks(keys, "image_encoder.trunk.blocks."), width)
    if any(k.startswith("image_encoder.layers.") for k in keys):
        conv = "image_encoder.patch_embed.seq.0.c.weight"
        return KeySignature("tinyvit", _tinyvit_blocks(keys), _dim(state, conv) or 0, _dim(state, conv, axis=2))
    blocks = _blocks(keys, "image_encoder.blocks.")
    if blocks:
        return KeySignature("vit", blocks, _dim(state, "image_encoder.patch_embed.proj.weight") or 0)
    return None


def _label(signature: KeySignature, entry: ModelEntry | None) -> str:
    """Words for a recognised (``entry``) or unknown-sized encoder of ``signature``."""
    size = f"{signature.blocks} blocks of width {signature.width}"
    if signature.trunk == "hiera":
        return entry.label if entry is not None else f"Hiera, {size}"
    if signature.trunk == "tinyvit":
        return entry.label if entry is not None else f"a TinyViT image encoder ({size})"
    return f"{entry.label if entry is not None else 'a SAM ViT'} ({size})"


def identify_checkpoint(state: Mapping[str, Any]) -> CheckpointFamily | None:
    """The model of a state dict (official key layout), or None if it is not recognised.

    The image encoder's key signature is looked up in ``persam.backends.models``;
    files of families persam has no backend for (SAM 2.0, HQ-SAM, an image
    encoder alone) are named as such (``supported=False``).

    Args:
        state: parameter names to tensors (anything with ``.shape``).
    """
    keys = list(state)
    signature = key_signature(state)
    if signature is None and any(k.startswith(("memory_attention.", "sam_mask_decoder.")) for k in keys):
        signature = KeySignature("hiera", 0, 0)
    if signature is not None:
        entry = models.by_signature(signature)
        label = _label(signature, entry)
        model_type = entry.name if entry is not None else None
        if signature.trunk == "hiera":
            if "no_obj_embed_spatial" not in state:  # a key SAM 2.1 added
                return CheckpointFamily(f"SAM 2.0 ({label}); persam loads SAM 2.1 files", None, supported=False)
            return CheckpointFamily(f"SAM 2.1 ({label})", model_type)
        if any(k.startswith("mask_decoder.hf_") for k in keys):
            return CheckpointFamily(f"{label} with HQ-SAM's decoder", None, False)
        return CheckpointFamily(label, model_type)
    if any(re.match(r"(blocks|layers)\.\d+\.", k) for k in keys) and not any(
        k.startswith("mask_decoder.") for k in keys
    ):
        return CheckpointFamily(
            "an image encoder alone (no image_encoder./prompt_encoder./mask_decoder. keys)", None, supported=False
        )
    return None


def _example(keys: list[str]) -> str:
    return f", e.g. {keys[0][:80]!r}" if keys else ""


def mismatch_message(model_type: str, state: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """One line saying why ``state`` does not load into ``model_type``'s module (its ``expected`` state dict).

    Names the family the file looks like and the ``--model`` that loads it;
    otherwise counts the missing, unexpected and mis-shaped keys with one
    example each (never the full lists).
    """
    family = identify_checkpoint(state)
    if family is not None and not family.supported:
        return (
            f"weights do not fit model type {model_type!r}: the file looks like {family.label}; persam has no "
            "backend for it; pass a SAM, MobileSAM, LiteMedSAM or SAM 2.1 file with --checkpoint PATH"
        )
    if family is not None and family.model_type not in (None, model_type):
        return (
            f"weights do not fit model type {model_type!r}: the file looks like {family.label}; "
            f"pass --model {family.model_type}, or another --checkpoint PATH"
        )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        k
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(getattr(expected[k], "shape", ()))
    ]
    counts = (
        f"keys: {len(missing)} missing{_example(missing)}; {len(unexpected)} unexpected{_example(unexpected)}; "
        f"{len(reshaped)} of another shape{_example(reshaped)}"
    )
    looks = f"the file looks like {family.label}, but " if family is not None else ""
    return (
        f"weights do not fit model type {model_type!r} ({looks}{counts}); the file is damaged or of another "
        "model: pass the matching --model, or another --checkpoint PATH"
    )
