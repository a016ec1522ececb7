"""The SAM 2.1 backend: ``sam2``'s model behind persam's ``Backend`` contract.

Encoding is ``SAM2ImagePredictor.set_image``'s: the package's own
``SAM2Transforms`` (to [0, 1], resize to S x S without keeping the aspect
ratio, ImageNet mean/std), ``forward_image`` (which already passes the two
high-resolution levels through the decoder's ``conv_s0`` / ``conv_s1``),
``_prepare_backbone_features``, and ``no_mem_embed`` added to the lowest
resolution level. The decoder side runs through
``persam.method.sam2_runner`` (``Backend.family == "sam2"``).

Only fp32 with PyTorch: the image encoder's features feed the decoder's
fp32 skip convolutions inside ``forward_image``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from persam.backends.base import Backend, EncodedImage, ImageGeometry, Preprocessing


@dataclass
class Sam2Backend(Backend):
    """A frozen SAM 2.1 model (``family == "sam2"``).

    Attributes (beyond ``Backend``'s):
        model: the whole ``SAM2Base`` (its ``image_encoder``, ``sam_prompt_encoder``
            and ``sam_mask_decoder`` are the backend's three parts).
        transforms: the package's ``SAM2Transforms`` for this input size.
    """

    model: nn.Module | None = field(default=None, repr=False)
    transforms: Callable[[np.ndarray], torch.Tensor] | None = field(default=None, repr=False)

    def geometry(self, original_hw: tuple[int, int]) -> ImageGeometry:
        """Square geometry: the photo stretched to S x S, no padding."""
        return ImageGeometry.for_image(original_hw, self.preprocessing.input_size, self.grid_hw, resize="square")

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> EncodedImage:
        """Encode as ``SAM2ImagePredictor.set_image`` does.

        Args:
            image: (H, W, 3) uint8 RGB array.

        Returns:
            (1, C, h, w) embedding with ``no_mem_embed`` added, the square
            geometry, and the two high-resolution skips.
        """
        model = self.model
        x = self.transforms(image)[None].to(self.device)
        backbone_out = model.forward_image(x)
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        # (h*w, 1, C) -> (1, C, h, w), highest resolution first
        feats = [f.permute(1, 2, 0).reshape(1, -1, *size).float().contiguous() for f, size in zip(vision_feats, feat_sizes)]
        self.encoder_calls += 1
        return EncodedImage(embedding=feats[-1], geometry=self.geometry(image.shape[:2]),
                            high_res_features=(feats[0], feats[1]))


def build_sam2_backend(name: str, checkpoint: str | os.PathLike | None, device: torch.device, precision: str,
                       random_weights: bool, runtime: str, resolve: Callable[[], Path]) -> Sam2Backend:
    """Build SAM 2 model ``name`` and load its weights strictly.

    Args:
        name: a SAM 2 registry name (``persam.backends.sam2_models.CONFIGS``).
        checkpoint: unused here beyond ``resolve`` (kept for the message).
        device: where the model runs.
        precision: must be "fp32".
        random_weights: skip loading.
        runtime: must be "torch".
        resolve: returns the checkpoint file (given, cached or downloaded).

    Raises:
        ValueError: bf16 or another runtime asked for.
        ImportError: the ``sam2`` package is missing.
        persam.backends.checkpoints.CheckpointError: the file does not load or does not fit.
    """
    from persam.backends import sam2_models

    del checkpoint
    if precision != "fp32":
        raise ValueError(f"{name} runs in fp32 only (its encoder feeds fp32 skip convolutions); drop --precision bf16")
    if runtime != "torch":
        raise ValueError(f"{name} runs with the torch runtime only; drop --runtime {runtime}")
    model = sam2_models.build_model(name)
    sha = "random"
    if not random_weights:
        from persam.backends.checkpoints import CheckpointError, file_sha256, load_state_dict
        from persam.backends.families import mismatch_message

        path = resolve()
        state = load_state_dict(path)
        expected = model.state_dict()
        fits = set(state) == set(expected) and all(tuple(state[k].shape) == tuple(expected[k].shape) for k in expected)
        if not fits:
            raise CheckpointError(f"{path}: {mismatch_message(name, state, expected)}")
        model.load_state_dict(state, strict=True)
        sha = file_sha256(path)
    model.eval().requires_grad_(False).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sam2.utils.transforms import SAM2Transforms

        transforms = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
    size = sam2_models.input_size(model)
    return Sam2Backend(
        name=name,
        image_encoder=model.image_encoder,
        prompt_encoder=model.sam_prompt_encoder,
        mask_decoder=model.sam_mask_decoder,
        preprocessing=Preprocessing(input_size=size),
        device=device,
        precision="fp32",
        checkpoint_sha256=sha,
        family="sam2",
        model=model,
        transforms=transforms,
    )
