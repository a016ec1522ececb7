"""The backend contract: a frozen SAM-family model split into its three parts.

A backend knows how to turn an RGB image into the encoder's input, how to run
the image encoder, and exposes the official prompt encoder and mask decoder
modules unchanged. Everything here works on tensors; no file IO.

Coordinate conventions: images are (H, W) = (rows, columns); points are
(x, y) pixels; boxes are XYXY. "Original" coordinates are those of the photo,
"model" coordinates those of the resized, padded square encoder input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import nn

from persam.backends.pixels import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    longest_side_hw,
    meanstd_input,
    resize_longest_side,
)

Normalization = Literal["meanstd", "minmax"]
ResizeMode = Literal["longest_side", "square"]
Family = Literal["sam", "sam2"]
_T = TypeVar("_T")
#: Named arrays of other backbones a store may keep with a photo (``EncodedImage.features``):
#: "dinov2": (1, 37 * 37, C) float32 DINOv2 pre-norm patch features (``persam.backends.dinov2``).
FEATURE_ARRAYS = ("dinov2",)


@dataclass(frozen=True)
class ImageGeometry:
    """How an image maps onto the encoder frame.

    Attributes:
        original_hw: (H, W) of the photo.
        resized_hw: (h', w') of the photo inside the encoder frame: the longest
            side resized to ``input_size`` (SAM 1 family, the rest padded), or
            (S, S) for ``resize == "square"`` (SAM 2: no padding).
        input_size: side S of the square encoder input (1024 for SAM and SAM 2).
        grid_hw: (h, w) of the image embedding (input_size / 16).
        resize: "longest_side" (aspect kept, zero padding; masks come back by
            upsampling to S, cropping the padding, resizing to (H, W)) or
            "square" (aspect not kept; masks come back by one bilinear resize
            from the decoder's (4h, 4w) to (H, W), as ``SAM2Transforms.postprocess_masks``).
    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_size: int
    grid_hw: tuple[int, int]
    resize: ResizeMode = "longest_side"

    @classmethod
    def for_image(
        cls,
        original_hw: tuple[int, int],
        input_size: int,
        grid_hw: tuple[int, int],
        resize: ResizeMode = "longest_side",
    ) -> ImageGeometry:
        h, w = original_hw
        if resize == "square":
            resized = (int(input_size), int(input_size))
        else:
            resized = longest_side_hw((h, w), input_size)
        return cls(
            original_hw=(int(h), int(w)), resized_hw=resized, input_size=input_size, grid_hw=grid_hw, resize=resize
        )

    @property
    def low_res_hw(self) -> tuple[int, int]:
        """(4h, 4w): size of the decoder's low-resolution mask logits."""
        return (4 * self.grid_hw[0], 4 * self.grid_hw[1])

    def to_model_xy(self, xy: torch.Tensor) -> torch.Tensor:
        """Scale (..., 2) (x, y) original pixel coordinates to the encoder frame.

        Per axis by (resized / original): SAM's ``apply_coords`` for the SAM 1
        family, ``SAM2Transforms.transform_coords(normalize=True)`` (x / W * S,
        y / H * S) for SAM 2.
        """
        (h, w), (rh, rw) = self.original_hw, self.resized_hw
        scale = torch.tensor([rw / w, rh / h], dtype=torch.float32, device=xy.device)
        return xy.to(torch.float32) * scale


@dataclass(frozen=True)
class Preprocessing:
    """How a backend turns an RGB uint8 image into its input tensor.

    Attributes:
        input_size: side of the square encoder input; the longest image side is
            resized to it (PIL bilinear, aspect kept) and the rest zero-padded.
        normalization: "meanstd" (SAM: (x - mean) / std per channel) or
            "minmax" (LiteMedSAM: (x - min) / (max - min) over the image).
        pixel_mean: per-channel mean, RGB, 0-255 (meanstd only).
        pixel_std: per-channel std, RGB, 0-255 (meanstd only).
        mode: how the encoder's input is made from the photo ("square": SAM 2's one stretch to S x S,
            done by the backend itself; see ``ImageGeometry.resize``).
    """

    input_size: int = 1024
    normalization: Normalization = "meanstd"
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    mode: ResizeMode = "longest_side"

    def shrink(self, image: np.ndarray) -> np.ndarray:
        """The smallest (H', W', 3) image that encodes exactly as ``image`` does, to send to an encoder elsewhere.

        "longest_side": ``resize`` (the encoder's own first step; resizing its result again changes
        nothing); "square": ``image`` itself (a resize before SAM 2's stretch would change the pixels).
        """
        return self.resize(image) if self.mode == "longest_side" else image

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Resize an (H, W, 3) uint8 image so its longest side is ``input_size``."""
        return resize_longest_side(image, self.input_size)

    def to_tensor(self, image: np.ndarray, device: torch.device) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, S, S) float32 normalised, padded input."""
        if self.normalization == "meanstd":  # in NumPy, as the warm start makes it (persam.backends.pixels)
            x = meanstd_input(self.resize(image), self.input_size, self.pixel_mean, self.pixel_std)
            return torch.from_numpy(x).to(device)
        resized = torch.from_numpy(np.ascontiguousarray(self.resize(image))).to(device).permute(2, 0, 1).float()
        low, high = resized.min(), resized.max()
        resized = (resized - low) / torch.clamp(high - low, min=1e-8)
        h, w = resized.shape[-2:]
        padded = torch.nn.functional.pad(resized, (0, self.input_size - w, 0, self.input_size - h))
        return padded.unsqueeze(0)


@dataclass
class EncodedImage:
    """An image after the encoder: everything the decoder needs.

    Attributes:
        embedding: (1, C, h, w) float32 image embedding (SAM 2: with
            ``no_mem_embed`` added, as ``SAM2ImagePredictor.set_image`` does).
        geometry: how the photo maps onto the encoder frame.
        high_res_features: SAM 2 only: the decoder's two high-resolution skips,
            already through ``conv_s0`` / ``conv_s1``: (1, C/8, 4h, 4w) and
            (1, C/4, 2h, 2w) float32; None for the SAM 1 family.
        features: the same photo through other backbones, by name (``FEATURE_ARRAYS``), e.g. an album
            index's stored "dinov2" (1, 37 * 37, C) patch features for the matcher prior; empty by default.
    """

    embedding: torch.Tensor
    geometry: ImageGeometry
    high_res_features: tuple[torch.Tensor, torch.Tensor] | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    _derived: dict[str, tuple[torch.Tensor, object]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def derived(self, key: str, make: Callable[[torch.Tensor], _T], replace: bool = False) -> _T:
        """``make(embedding)``, computed once per embedding and kept with the image.

        For prompt-independent products of the embedding that every use of
        this image shares (``normalized_features``, the decoder's
        ``persam.method.first_block.FirstBlock``).
        ``replace`` computes and keeps it anew (a richer product under the same key).
        """
        hit = self._derived.get(key)
        if replace or hit is None or hit[0] is not self.embedding:
            hit = (self.embedding, make(self.embedding))
            self._derived[key] = hit
        return hit[1]  # type: ignore[return-value]

    def arrays(self) -> dict[str, torch.Tensor]:
        """The named arrays that make up this image, for a store to write as they are.

        ``{"embedding": (1, C, h, w)}``, plus for SAM 2 ``"high_res_0"`` (1, C/8, 4h, 4w) and
        ``"high_res_1"`` (1, C/4, 2h, 2w), and ``features`` under their own names.
        ``Backend.from_arrays`` rebuilds the image from them.
        """
        named = {"embedding": self.embedding}
        for level, feature in enumerate(self.high_res_features or ()):
            named[f"high_res_{level}"] = feature
        return {**named, **self.features}

    @classmethod
    def from_arrays(cls, arrays: dict[str, torch.Tensor], geometry: ImageGeometry) -> EncodedImage:
        """The image of ``arrays()``'s output (every tensor already on its device, float32)."""
        levels = sorted(k for k in arrays if k.startswith("high_res_"))
        high_res = tuple(arrays[k] for k in levels) if levels else None
        features = {k: arrays[k] for k in FEATURE_ARRAYS if k in arrays}
        return cls(embedding=arrays["embedding"], geometry=geometry, high_res_features=high_res, features=features)

    def forget_derived(self) -> None:
        """Drop the cached products (``derived``): the next use recomputes them."""
        self._derived.clear()

    def normalized_features(self) -> torch.Tensor:
        """(C, h, w) embedding with each cell L2-normalised over channels (computed once)."""

        def normalize(embedding: torch.Tensor) -> torch.Tensor:
            feats = embedding[0].float()
            # the sum of squares over channels runs along contiguous rows of cells (``norm(dim=0)``
            # reduces across them, several times slower); equal up to float rounding
            return feats / feats.square().sum(0, keepdim=True).sqrt().clamp_min(1e-12)

        return self.derived("persam.normalized_features", normalize)


@dataclass
class Backend:
    """A frozen SAM-family model.

    Attributes:
        name: registry name ("vit_t", "vit_h", "litemedsam", ...).
        family: "sam" (segment-anything's decoder: SAM, MobileSAM, LiteMedSAM) or
            "sam2" (SAM 2.1, ``persam.backends.sam2_backend``): tells the method
            layer which decoder runner to use (``persam.method.decoder``).
        image_encoder: official image encoder module (SAM 2: ``Sam2ImageEncoder`` around the official model).
        prompt_encoder: official prompt encoder module.
        mask_decoder: official mask decoder module.
        preprocessing: how images become encoder input.
        device: where the modules live.
        precision: "fp32" or "bf16": the image encoder's weights and arithmetic;
            the prompt encoder and mask decoder always run in fp32.
        checkpoint_sha256: SHA-256 of the weights file, or "random" for random weights.
        runtime: "torch", or the inference runtime that runs the image encoder
            (``persam.backends.runtime.attach_runtime``; its PyTorch module then stays fp32).
        runtime_encoder: that runtime's encoder, (1, 3, S, S) -> what ``image_encoder``
            returns (here a (1, C, h, w) float32 embedding; SAM 2: its three maps); None for torch.
    """

    name: str
    image_encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module
    preprocessing: Preprocessing
    device: torch.device
    precision: Literal["fp32", "bf16"] = "fp32"
    checkpoint_sha256: str = "random"
    runtime: str = "torch"
    runtime_encoder: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]] | None = field(
        default=None, repr=False
    )
    encoder_calls: int = field(default=0, repr=False)
    family: Family = "sam"
    _dense_pe: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def encoder_dtype(self) -> torch.dtype:
        """dtype of the image encoder's weights and input."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(h, w) of the image embedding grid."""
        h, w = self.prompt_encoder.image_embedding_size
        return (int(h), int(w))

    def geometry(self, original_hw: tuple[int, int]) -> ImageGeometry:
        """Geometry of a photo of size (H, W) for this backend."""
        return ImageGeometry.for_image(original_hw, self.preprocessing.input_size, self.grid_hw)

    @torch.inference_mode()
    def encode(self, image: np.ndarray, runtime: Callable | None = None) -> EncodedImage:
        """Run the image encoder once.

        Args:
            image: (H, W, 3) uint8 RGB array.
            runtime: the runtime encoder to run instead of ``runtime_encoder`` (its throughput mode,
                ``persam.backends.throughput``), or None.

        Returns:
            The (1, C, h, w) float32 embedding with the image geometry.
        """
        x = self.preprocessing.to_tensor(image, self.device)
        runtime = runtime or self.runtime_encoder
        if runtime is not None:
            embedding = runtime(x)
        else:
            # The encoder's weights are already in the working precision
            # (``persam.backends.optimize``), so no autocast here.
            embedding = self.image_encoder(x.contiguous(memory_format=torch.channels_last).to(self.encoder_dtype))
        self.encoder_calls += 1
        # Row-major (not channels-last): the same layout as an embedding read back
        # from an album index, so both give bit-identical masks.
        embedding = embedding.float().contiguous(memory_format=torch.contiguous_format)
        return EncodedImage(embedding=embedding, geometry=self.geometry(image.shape[:2]))

    #: The arrays an encoded image of this backend is made of (``EncodedImage.arrays``' keys).
    array_names: tuple[str, ...] = field(default=("embedding",), init=False, repr=False)

    def from_arrays(self, arrays: dict[str, np.ndarray], original_hw: tuple[int, int]) -> EncodedImage:
        """Rebuild a stored image on this backend's device.

        Args:
            arrays: the stored named arrays (``EncodedImage.arrays``), any float dtype, each with its batch axis.
                Those of ``FEATURE_ARRAYS`` that are present become the image's ``features``.
            original_hw: (H, W) of the photo.

        Raises:
            persam.errors.IncompatibleError: an array this backend needs is missing or of another shape
                (the image was encoded by another model family or size).
        """
        from persam.errors import IncompatibleError

        missing = [name for name in self.array_names if name not in arrays]
        if missing or arrays["embedding"].shape[-2:] != self.grid_hw:
            what = f"no {', '.join(missing)}" if missing else f"an embedding of shape {arrays['embedding'].shape}"
            raise IncompatibleError(f"encoded by another model family or size ({what}) than {self.name}")
        tensors = {
            name: torch.from_numpy(np.ascontiguousarray(arrays[name], dtype=np.float32)).to(self.device)
            for name in (*self.array_names, *(k for k in FEATURE_ARRAYS if k in arrays))
        }
        return EncodedImage.from_arrays(tensors, self.geometry(original_hw))

    def dense_pe(self) -> torch.Tensor:
        """(1, C, h, w) positional encoding of the embedding grid (computed once)."""
        if self._dense_pe is None:
            with torch.inference_mode():
                pe = self.prompt_encoder.get_dense_pe()
                self._dense_pe = (pe, pe.permute(0, 2, 3, 1).reshape(1, -1, pe.shape[1]).contiguous())
        return self._dense_pe[0]

    def dense_pe_cells(self) -> torch.Tensor:
        """(1, h*w, C) the same positional encoding, one row per grid cell (row-major)."""
        self.dense_pe()
        return self._dense_pe[1]
