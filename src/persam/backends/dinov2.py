"""DINOv2, the feature backbone of the Matcher prior: patch features for semantic matching, separate from SAM.

The architecture is timm's (``vit_*_patch14_dinov2``, the official DINOv2
layout: LayerScale, no registers, 518 px native position grid); the weights
are Meta's published ``dinov2_vit*14_pretrain.pth`` files, downloaded once and
cached beside SAM's checkpoints (``persam.backends.checkpoints``), loaded
strictly (every key and shape, ``weights_only``). Meta publishes no SHA-256
for these files: like SAM 2.1's, the hash of what was received is logged and
recorded as ``checkpoint_sha256`` (a concept made with other weights is
refused); a truncated or damaged file fails the strict load.

Matcher's input: the photo resized to 518 x 518 (aspect not kept, PIL
bilinear as torchvision's ``Resize`` on a PIL image), scaled to [0, 1] and
normalised with ImageNet's mean and std; the features are the last block's
output before the final LayerNorm (``x_prenorm``), class token dropped:
(37 * 37, C) in row-major patch order. fp32 throughout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from persam.backends.checkpoints import CheckpointInfo, checkpoint_sha256, download_checkpoint, load_state_dict
from persam.errors import CheckpointError, OptionsError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Matcher's input side (pixels) and DINOv2's patch size.
INPUT_SIZE = 518
PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_URL = "https://dl.fbaipublicfiles.com/dinov2/"


@dataclass(frozen=True)
class DinoSpec:
    """One published DINOv2 backbone.

    Attributes:
        name: persam's name, e.g. ``"dinov2_vitl14"``.
        timm_name: timm's architecture, e.g. ``"vit_large_patch14_dinov2"``.
        checkpoint: where Meta publishes the weights (no hash published).
    """

    name: str
    timm_name: str
    checkpoint: CheckpointInfo


def _spec(size: str, timm_size: str) -> DinoSpec:
    name = f"dinov2_vit{size}14"
    url = f"{_URL}{name}/{name}_pretrain.pth"
    return DinoSpec(name, f"vit_{timm_size}_patch14_dinov2", CheckpointInfo(name, url, None, url.rsplit("/", 1)[-1]))


#: The DINOv2 backbones persam can download, by name (Matcher's published results use ViT-L/14).
DINO_MODELS: dict[str, DinoSpec] = {
    s.name: s for s in (_spec("s", "small"), _spec("b", "base"), _spec("l", "large"), _spec("g", "giant"))
}
DEFAULT_DINO = "dinov2_vitl14"


@dataclass
class FeatureBackbone:
    """A frozen DINOv2 and how photos become its patch features.

    Attributes:
        name: registry name (``DINO_MODELS``) or a test model's name.
        model: the timm ``VisionTransformer`` (final norm replaced by identity: pre-norm features).
        device: where it lives.
        checkpoint_sha256: SHA-256 of the weights file, or "random".
        encoder_calls: photos encoded so far (``persam bench``, tests).
    """

    name: str
    model: nn.Module
    device: torch.device
    checkpoint_sha256: str = "random"
    encoder_calls: int = field(default=0, repr=False)

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(37, 37): the patch grid at Matcher's 518 px input."""
        n = INPUT_SIZE // PATCH_SIZE
        return (n, n)

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, 518, 518) float32 normalised input (aspect not kept)."""
        import torch
        from PIL import Image

        resized = np.array(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
        x = torch.from_numpy(np.ascontiguousarray(resized)).to(self.device).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)
        return ((x - mean) / std)[None]

    def encode(self, image: np.ndarray) -> torch.Tensor:
        """(37 * 37, C) float32 pre-norm patch features of a photo, row-major (row = y // 14, col = x // 14).

        Args:
            image: (H, W, 3) uint8 RGB photo at any size.
        """
        import torch

        with torch.inference_mode():
            tokens = self.model.forward_features(self.to_tensor(image))
        self.encoder_calls += 1
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        return tokens[0, prefix:].float().contiguous()


def build_dino_module(name: str, **overrides) -> nn.Module:
    """timm's DINOv2 architecture for ``name`` (random weights), at 518 px; ``overrides`` shrink it for tests."""
    import timm

    spec = DINO_MODELS.get(name)
    timm_name = spec.timm_name if spec is not None else overrides.pop("timm_name", "vit_small_patch14_dinov2")
    model = timm.create_model(timm_name, pretrained=False, img_size=INPUT_SIZE, num_classes=0, **overrides)
    return model.eval()


def prenorm(model: nn.Module) -> nn.Module:
    """Replace the final LayerNorm by identity: ``forward_features`` then returns Matcher's ``x_prenorm``."""
    from torch import nn

    model.norm = nn.Identity()
    return model.eval()


def load_dino_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load Meta's DINOv2 state dict (official key layout) into a timm model, strictly.

    Raises:
        CheckpointError: not a DINOv2 file of this size (missing / unexpected keys or shapes).
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = load_state_dict(path)
    try:
        converted = checkpoint_filter_fn(state, model)
        model.load_state_dict(converted, strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a DINOv2 checkpoint of this size ({first}); pass the matching file", path=path
        ) from None


def dino_identity(
    name: str = DEFAULT_DINO, checkpoint: str | os.PathLike | None = None, *, random_weights: bool = False
) -> tuple[str, str] | None:
    """(name, weights SHA-256) of the DINOv2 ``create_dino`` would build, without building it.

    "random" with ``random_weights``; else the SHA-256 of ``checkpoint`` or of
    the cached download (hashing the file only: no model, no state dict).
    None when the weights are not on this machine yet (only the download can tell).
    """
    from pathlib import Path

    if random_weights:
        return (name, "random")
    if checkpoint is not None:
        path = Path(checkpoint)
    else:
        from persam.backends.checkpoints import cache_dir

        spec = DINO_MODELS.get(name)
        if spec is None:
            return None
        path = cache_dir() / spec.checkpoint.filename
    return (name, checkpoint_sha256(path)) if path.is_file() else None


def create_dino(
    name: str = DEFAULT_DINO,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    random_weights: bool = False,
    progress: bool | None = None,
    architecture: dict | None = None,
) -> FeatureBackbone:
    """A DINOv2 feature backbone, its weights downloaded once (or from ``checkpoint``).

    Args:
        name: one of ``DINO_MODELS`` (``dinov2_vits14`` ... ``dinov2_vitg14``).
        checkpoint: a local weights file instead of the download.
        device: "cpu", "cuda", ... or None for the best available.
        random_weights: no weights at all (speed tests); seeded by the caller's torch seed.
        progress: download progress bar; None = on a terminal only.
        architecture: timm keyword overrides (``embed_dim``, ``depth``, ``num_heads``) for tiny test models.

    Raises:
        OptionsError: unknown name. CheckpointError: download or load failed.
    """
    import torch

    if name not in DINO_MODELS:
        raise OptionsError(f"unknown DINOv2 model {name!r}; choose one of {', '.join(DINO_MODELS)}", field="dino")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_dino_module(name, **(architecture or {}))
    sha = "random"
    if not random_weights:
        path = (
            checkpoint
            if checkpoint is not None
            else download_checkpoint(DINO_MODELS[name].checkpoint, progress=progress)
        )
        load_dino_weights(model, path)
        sha = checkpoint_sha256(path)
    return FeatureBackbone(name=name, model=prenorm(model).to(dev), device=dev, checkpoint_sha256=sha)


@dataclass(frozen=True)
class DinoChoice:
    """The DINOv2 a session builds on first use (``create_dino``), and its identity without building it.

    Attributes:
        name: one of ``DINO_MODELS``. checkpoint: a local weights file, or None for the download.
        device: where to build it. random_weights: no weights (speed tests). progress: download bar.
    """

    name: str
    checkpoint: str | os.PathLike | None
    device: torch.device | str | None
    random_weights: bool
    progress: bool | None

    def __call__(self) -> FeatureBackbone:
        return create_dino(
            self.name, self.checkpoint, device=self.device, random_weights=self.random_weights, progress=self.progress
        )

    def identity(self) -> tuple[str, str] | None:
        """(name, weights SHA-256), or None while the weights are not on this machine (``dino_identity``)."""
        return dino_identity(self.name, self.checkpoint, random_weights=self.random_weights)
