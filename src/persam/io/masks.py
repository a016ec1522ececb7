"""Reading masks and label maps; writing them as PNG (atomically).

Masks: nonzero = object, or one chosen label value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from persam.io.atomic import atomic_save
from persam.io.images import ImageLike, open_image


def load_mask(source: ImageLike, label: int | None = None) -> np.ndarray:
    """Load a mask as (H, W) bool.

    Args:
        source: a path, a PIL image or an array. Palette images give their
            index values, grayscale their levels; RGB masks count any nonzero
            channel.
        label: keep only pixels equal to this value (one object of a
            multi-label mask); None keeps every nonzero pixel.
    """
    if isinstance(source, np.ndarray):
        arr = source
    else:
        img = source if isinstance(source, Image.Image) else open_image(source)
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA"):
            img = img.convert(img.mode[:-1])
        arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.max(axis=2) if label is None else arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"mask has shape {arr.shape}; pass a single-channel (H, W) mask")
    return arr == label if label is not None else arr != 0


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an (H, W) bool mask as a single-channel PNG (0 background, 255 object), atomically."""
    img = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
    atomic_save(Path(path), lambda tmp: img.save(tmp, format="PNG"))


def save_label_map(path: str | os.PathLike, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write an (H, W) uint8 label map as a palette PNG, atomically."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette or davis_palette())
    atomic_save(Path(path), lambda tmp: img.save(tmp, format="PNG"))


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS annotations (Pascal VOC's bit-interleaved colours)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend((r, g, b))
    return pal


