"""SAM 2.1 models from Meta's ``sam2`` package: build, load, and write random checkpoints.

The package builds its models from Hydra configs that ship inside it. Each
persam name's entry in ``persam.backends.models`` names one config and its
Hydra overrides; ``sam2_tiny`` is a reduced test architecture
(256-px input, a five-block Hiera of width 32, one memory-attention layer)
built from the tiny config with overrides, so that unit tests run in a
fraction of a second per image on a CPU. The mask decoder, prompt encoder
and memory modules keep the official classes in every size.

Official checkpoints hold the model's state dict under ``"model"`` (471 keys
for SAM 2.1); ``write_random_checkpoint`` writes that layout and
``load_weights`` reads it strictly with ``weights_only=True``.

Feature sizes: for an input of side S the image embedding is (256, S/16, S/16)
and the decoder's two high-resolution skips are (32, S/4, S/4) and
(64, S/8, S/8).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persam.backends import models
from persam.backends.models import SAM2_TINY_INPUT_SIZE
from persam.errors import CheckpointError, OptionsError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Input side of the reduced test architecture.
TINY_INPUT_SIZE = SAM2_TINY_INPUT_SIZE


def __getattr__(name: str) -> Any:
    if name == "CONFIGS":  # persam name -> config inside the ``sam2`` package, from the model table
        return {entry.name: entry.config for entry in models.entries("sam2")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_sam2(name: str) -> bool:
    """Whether ``name`` is a SAM 2 family model (no imports)."""
    entry = models.find(name)
    return entry is not None and entry.family == "sam2"


def input_size(model: nn.Module) -> int:
    """Side S of the square input of a built SAM 2 model (``SAM2Base.image_size``)."""
    return int(model.image_size)


def feature_sizes(size: int) -> list[tuple[int, int]]:
    """Backbone feature sizes, highest resolution first: [(S/4, S/4), (S/8, S/8), (S/16, S/16)]."""
    return [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]


def build_model(name: str, *, video: bool = False, device: str | torch.device = "cpu") -> nn.Module:
    """A random-weight SAM 2 model ``name`` in eval mode, as the package's builders make it.

    ``video`` builds ``SAM2VideoPredictor`` (the tracker), else ``SAM2Base``
    (what ``SAM2ImagePredictor`` wraps). Both have the same state-dict layout.
    Seed torch before calling for reproducible random weights.

    Raises:
        ValueError: ``name`` is not a SAM 2 model.
        ImportError: the ``sam2`` package is missing (``pip install "persam[sam2]"``).
    """
    if not is_sam2(name):
        known = ", ".join(entry.name for entry in models.entries("sam2"))
        raise OptionsError(f"unknown SAM 2 model {name!r}; choose one of: {known}", field="model")
    entry = models.MODELS[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sam2.build_sam import build_sam2, build_sam2_video_predictor
    except ImportError as exc:
        raise ImportError(f'{name} needs the sam2 package: pip install "persam[sam2]" ({exc})') from None
    overrides = list(entry.overrides)
    build = build_sam2_video_predictor if video else build_sam2
    with warnings.catch_warnings():
        # without its compiled extension the package warns that it skips hole filling
        warnings.simplefilter("ignore")
        model = build(entry.config, None, device=str(device), hydra_overrides_extra=overrides)
    return model.eval()


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an official-layout checkpoint (state dict under ``"model"``) strictly, with ``weights_only=True``.

    Raises:
        ValueError: the file is not a SAM 2 checkpoint or its keys/shapes do not fit ``model``
            (the message names the file and the first mismatching keys).
    """
    import torch

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one message
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f'{path}: a SAM 2 checkpoint holds its weights under "model"; this file does not')
    state = payload["model"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        parts = [
            f"{len(keys)} {what} (first: {', '.join(keys[:3])})"
            for what, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("keys of another shape", reshaped),
            )
            if keys
        ]
        raise CheckpointError(f"{path}: the weights do not fit this SAM 2 architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def write_random_checkpoint(name: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Save seeded random weights of ``name`` in the official layout ``{"model": state_dict}``."""
    import torch

    torch.manual_seed(seed)
    model = build_model(name)
    out = Path(path)
    torch.save({"model": model.state_dict()}, out)
    return out
