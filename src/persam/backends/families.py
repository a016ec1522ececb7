"""Which model a checkpoint holds, told from its state-dict keys and shapes.

A checkpoint of another family than the ``--model`` asked for fails the
strict key check with thousands of missing and unexpected keys. This module
names the family the file looks like (SAM ViT-B/L/H by the depth and width
of ``image_encoder.blocks``, MobileSAM or LiteMedSAM by their TinyViT
encoder, SAM 2.1 by its Hiera ``image_encoder.trunk``) so the error can say
which ``--model`` to pass, in one line. No torch import: only ``.shape`` is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: (depth, width) of the official SAM ViT image encoders.
_SAM_VITS = {
    (12, 768): ("SAM ViT-B", "vit_b"),
    (24, 1024): ("SAM ViT-L", "vit_l"),
    (32, 1280): ("SAM ViT-H", "vit_h"),
    (1, 48): ("the tiny test SAM", "sam_tiny"),
}
#: (blocks, width) of the SAM 2 / 2.1 Hiera trunks.
_HIERAS = {
    (12, 96): ("Hiera-T", "sam2.1_hiera_tiny"),
    (16, 96): ("Hiera-S", "sam2.1_hiera_small"),
    (24, 112): ("Hiera-B+", "sam2.1_hiera_base_plus"),
    (48, 144): ("Hiera-L", "sam2.1_hiera_large"),
    (5, 32): ("the reduced test Hiera", "sam2_tiny"),
}


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


def identify_checkpoint(state: Mapping[str, Any]) -> CheckpointFamily | None:
    """The family of a state dict (official key layout), or None if it is not recognised.

    Args:
        state: parameter names to tensors (anything with ``.shape``).
    """
    keys = list(state)
    if any(k.startswith(("image_encoder.trunk.", "memory_attention.", "sam_mask_decoder.")) for k in keys):
        blocks = len(_indices(keys, "image_encoder.trunk.blocks."))
        width = _dim(state, "image_encoder.trunk.patch_embed.proj.weight")
        size, model_type = _HIERAS.get((blocks, width or 0), (f"Hiera, {blocks} blocks of width {width}", None))
        if "no_obj_embed_spatial" not in state:  # a key SAM 2.1 added
            return CheckpointFamily(f"SAM 2.0 ({size}); persam loads SAM 2.1 files", None, supported=False)
        return CheckpointFamily(f"SAM 2.1 ({size})", model_type)
    if any(k.startswith("image_encoder.layers.") for k in keys):
        kernel = _dim(state, "image_encoder.patch_embed.seq.0.c.weight", axis=2)
        if "image_encoder.head.weight" in state or kernel == 3:
            return CheckpointFamily("MobileSAM (TinyViT image encoder)", "vit_t")
        return CheckpointFamily("LiteMedSAM (256-px TinyViT image encoder)", "litemedsam")
    blocks = _indices(keys, "image_encoder.blocks.")
    if blocks:
        depth, width = len(blocks), _dim(state, "image_encoder.patch_embed.proj.weight")
        name, model_type = _SAM_VITS.get((depth, width or 0), ("a SAM ViT", None))
        hq = any(k.startswith("mask_decoder.hf_") for k in keys)
        if hq:
            return CheckpointFamily(f"{name} ({depth} blocks of width {width}) with HQ-SAM's decoder", None, False)
        return CheckpointFamily(f"{name} ({depth} blocks of width {width})", model_type)
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
