"""Checks of a reference mask against its photo, shared by every prior's ``personalize``."""

from __future__ import annotations

import os

import numpy as np
import torch

from persam.errors import InputError
from persam.io import ImageLike


def describe(source: ImageLike) -> str:
    """A path as given, or "the given array" for pixels passed directly (for messages)."""
    return str(source) if isinstance(source, (str, os.PathLike)) else "the given array"


def check_reference_mask(mask: np.ndarray, photo_hw: tuple[int, int], name: str) -> torch.Tensor:
    """The (H, W) bool mask as a tensor, refused when its size differs from the photo's, empty or full.

    Raises:
        InputError: size mismatch, empty mask, mask covering the whole photo.
    """
    if tuple(mask.shape) != tuple(photo_hw):
        mh, mw = mask.shape
        ih, iw = photo_hw
        raise InputError(f"{name}: mask is {mw}x{mh} but the photo is {iw}x{ih}; pass the mask drawn on that photo")
    if not mask.any():
        raise InputError(f"{name}: the reference mask is empty; mark the object with nonzero pixels")
    if mask.all():
        raise InputError(f"{name}: the reference mask covers the whole photo; mark only the object")
    return torch.from_numpy(mask)
