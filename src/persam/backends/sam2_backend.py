"""The SAM 2.1 backend: ``sam2``'s model behind persam's ``Backend`` contract.

Encoding is ``SAM2ImagePredictor.set_image``'s: the package's own
``SAM2Transforms`` (to [0, 1], resize to S x S without keeping the aspect
ratio, ImageNet mean/std), ``forward_image`` (which already passes the two
high-resolution levels through the decoder's ``conv_s0`` / ``conv_s1``),
``_prepare_backbone_features``, and ``no_mem_embed`` added to the lowest
resolution level. The decoder side runs through
``persam.method.sam2_runner`` (``Backend.family == "sam2"``).

The input side of that chain (after ``SAM2Transforms``) to the three maps is
one module, ``Sam2ImageEncoder``: PyTorch runs it, and ``--runtime openvino``
/ ``--runtime onnxruntime`` convert it (``persam.backends.runtime``).

Precision: PyTorch runs fp32 only (the image encoder's features feed the
decoder's fp32 skip convolutions inside ``forward_image``). Through a runtime,
"fp32" is exact (float rounding only) and OpenVINO's "bf16" is its
``INFERENCE_PRECISION_HINT`` over the whole converted module, skip
convolutions included; the three maps stay float32 tensors.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from persam.backends.base import Backend, EncodedImage, ImageGeometry, Preprocessing
from persam.errors import OptionsError


class Sam2ImageEncoder(nn.Module):
    """The official encoding, input to the three maps the decoder needs, as one module.

    Calls the model's own ``forward_image`` and ``_prepare_backbone_features``
    and adds ``no_mem_embed`` (as ``SAM2ImagePredictor.set_image`` does); for
    a (1, 3, S, S) float32 input (after ``SAM2Transforms``) it returns, highest
    resolution first and row-major:

    * (1, C/8, S/4, S/4): the first high-resolution skip (through ``conv_s0``);
    * (1, C/4, S/8, S/8): the second (through ``conv_s1``);
    * (1, C, S/16, S/16): the image embedding, ``no_mem_embed`` added.

    Attributes:
        model: the whole ``SAM2Base`` (only its image path runs here).
        output_names: the three outputs' names, in order (the ONNX graph's outputs).
    """

    output_names = ("high_res_s0", "high_res_s1", "embedding")

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        backbone_out = model.forward_image(x)
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        # (h*w, 1, C) -> (1, C, h, w), highest resolution first
        s0, s1, embedding = (
            f.permute(1, 2, 0).reshape(1, -1, *size).float().contiguous() for f, size in zip(vision_feats, feat_sizes)
        )
        return s0, s1, embedding


@dataclass
class Sam2Backend(Backend):
    """A frozen SAM 2.1 model (``family == "sam2"``).

    Attributes (beyond ``Backend``'s):
        model: the whole ``SAM2Base`` (its ``sam_prompt_encoder`` and
            ``sam_mask_decoder`` are the backend's prompt encoder and mask
            decoder; ``Backend.image_encoder`` is a ``Sam2ImageEncoder`` around it).
        transforms: the package's ``SAM2Transforms`` for this input size.
    """

    model: nn.Module | None = field(default=None, repr=False)
    transforms: Callable[[np.ndarray], torch.Tensor] | None = field(default=None, repr=False)
    array_names: tuple[str, ...] = field(default=("embedding", "high_res_0", "high_res_1"), init=False, repr=False)

    def geometry(self, original_hw: tuple[int, int]) -> ImageGeometry:
        """Square geometry: the photo stretched to S x S, no padding."""
        return ImageGeometry.for_image(original_hw, self.preprocessing.input_size, self.grid_hw, resize="square")

    @torch.inference_mode()
    def encode(self, image: np.ndarray, runtime: Callable | None = None) -> EncodedImage:
        """Encode as ``SAM2ImagePredictor.set_image`` does.

        Args:
            image: (H, W, 3) uint8 RGB array.
            runtime: the runtime encoder to run instead of ``runtime_encoder``, or None (``Backend.encode``).

        Returns:
            (1, C, h, w) embedding with ``no_mem_embed`` added, the square
            geometry, and the two high-resolution skips (``Sam2ImageEncoder``'s
            three maps, from PyTorch or from ``runtime_encoder``).
        """
        x = self.transforms(image)[None].to(self.device)
        encoder = runtime or self.runtime_encoder or self.image_encoder
        s0, s1, embedding = (f.float().contiguous() for f in encoder(x))
        self.encoder_calls += 1
        return EncodedImage(embedding=embedding, geometry=self.geometry(image.shape[:2]), high_res_features=(s0, s1))


def build_sam2_backend(
    name: str,
    checkpoint: str | os.PathLike | None,
    device: torch.device,
    precision: str,
    random_weights: bool,
    runtime: str,
    resolve: Callable[[], Path],
) -> Sam2Backend:
    """Build SAM 2 model ``name`` and load its weights strictly.

    Args:
        name: a SAM 2 registry name (``persam.backends.sam2_models.CONFIGS``).
        checkpoint: unused here beyond ``resolve`` (kept for the message).
        device: where the model runs.
        precision: "fp32"; "bf16" only with ``runtime="openvino"`` (its compile hint).
        random_weights: skip loading.
        runtime: "torch", or "openvino" / "onnxruntime" for ``Sam2ImageEncoder``
            on the CPU (``persam.backends.runtime.attach_runtime``).
        resolve: returns the checkpoint file (given, cached or downloaded).

    Raises:
        ValueError: bf16 with PyTorch (ONNX Runtime's fp32-only is refused by ``create_backend``'s preflight).
        persam.backends.runtime.RuntimeUnavailableError: a runtime that cannot run
            the asked precision, its package missing, or a device other than the CPU.
        ImportError: the ``sam2`` package is missing.
        persam.backends.checkpoints.CheckpointError: the file does not load or does not fit.
    """
    from persam.backends import sam2_models

    del checkpoint
    if precision != "fp32" and runtime == "torch":  # other runtimes' precisions: runtime.preflight
        raise OptionsError(
            f"{name} runs in fp32 only with --runtime torch (its encoder feeds fp32 skip convolutions); "
            "drop --precision bf16, or use --runtime openvino"
        )
    model = sam2_models.build_model(name)
    sha = "random"
    if not random_weights:
        from persam.backends.checkpoints import CheckpointError, checkpoint_sha256, load_state_dict
        from persam.backends.families import mismatch_message

        path = resolve()
        state = load_state_dict(path)
        expected = model.state_dict()
        fits = set(state) == set(expected) and all(tuple(state[k].shape) == tuple(expected[k].shape) for k in expected)
        if not fits:
            raise CheckpointError(f"{path}: {mismatch_message(name, state, expected)}")
        model.load_state_dict(state, strict=True)
        sha = checkpoint_sha256(path)
    model.eval().requires_grad_(False).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sam2.utils.transforms import SAM2Transforms

        transforms = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
    size = sam2_models.input_size(model)
    backend = Sam2Backend(
        name=name,
        image_encoder=Sam2ImageEncoder(model).eval(),
        prompt_encoder=model.sam_prompt_encoder,
        mask_decoder=model.sam_mask_decoder,
        preprocessing=Preprocessing(input_size=size, mode="square"),
        device=device,
        precision=precision,
        checkpoint_sha256=sha,
        family="sam2",
        model=model,
        transforms=transforms,
    )
    if runtime != "torch":
        from persam.backends.runtime import attach_runtime

        attach_runtime(backend, runtime)
    return backend
