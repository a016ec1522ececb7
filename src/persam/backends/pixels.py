"""The SAM 1 family's encoder input from a photo's pixels, in NumPy alone (no PyTorch import).

``Preprocessing`` (``persam.backends.base``) makes its input with these functions, and the warm start
(``persam.backends.warm``) makes the same input, bit for bit, before PyTorch is imported. Images are
(H, W, 3) uint8 RGB; the input is (1, 3, S, S) float32, the photo in the top-left corner, zero-padded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: SAM's per-channel pixel mean and std, RGB, 0-255.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def longest_side_hw(original_hw: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(h', w') of an (H, W) photo with its longest side resized to ``input_size`` (aspect kept), rounded as
    SAM's ``ResizeLongestSide.get_preprocess_shape``."""
    h, w = original_hw
    scale = input_size / max(h, w)
    return (int(h * scale + 0.5), int(w * scale + 0.5))


def resize_longest_side(image: np.ndarray, input_size: int) -> np.ndarray:
    """The (h', w', 3) uint8 image resized so its longest side is ``input_size`` (PIL bilinear)."""
    rh, rw = longest_side_hw(image.shape[:2], input_size)
    if (rh, rw) == image.shape[:2]:
        return image
    return np.array(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))


def meanstd_input(
    resized: np.ndarray, input_size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """(1, 3, S, S) float32 ``(x - mean) / std`` per channel of a resized (h', w', 3) uint8 image, zero-padded
    to S x S (float32 arithmetic throughout, each value rounded once per step, as PyTorch does)."""
    h, w = resized.shape[:2]
    x = resized.astype(np.float32).transpose(2, 0, 1)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    out = np.zeros((1, 3, input_size, input_size), dtype=np.float32)
    out[0, :, :h, :w] = (x - m) / s
    return out
