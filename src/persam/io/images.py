"""Reading photos (any mode, EXIF-rotated) and writing overlays.

Images: a path, a PIL image or an array. Whatever the source (grayscale,
RGBA, palette, 16-bit, EXIF-rotated), the result is (H, W, 3) uint8 RGB in
display orientation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from persam.io.atomic import atomic_save

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def open_image(source: str | os.PathLike) -> Image.Image:
    """Open and decode an image file; one-line errors naming the file."""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc.__class__.__name__}); pass a JPEG or PNG file") from None
    return img


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.array(img.convert("RGB"))


def load_image(source: ImageLike) -> np.ndarray:
    """Load a photo as (H, W, 3) uint8 RGB.

    Args:
        source: a path, a PIL image, or an array (H, W), (H, W, 3) or (H, W, 4),
            uint8 or uint16 (16-bit values are scaled to 8 bits).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not an image or the array has another shape.
    """
    if isinstance(source, Image.Image):
        return _to_rgb_uint8(source)
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype == np.uint16:
            arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
        elif arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            raise ValueError(f"image array has dtype {arr.dtype}; pass uint8 (or uint16) pixel values")
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"image array has shape {source.shape}; pass (H, W), (H, W, 3) or (H, W, 4)")
        return np.ascontiguousarray(arr[..., :3])
    return _to_rgb_uint8(open_image(source))


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40), alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 image with ``mask`` tinted in ``color``."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return out.astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, mask: np.ndarray) -> None:
    """Write the photo with the mask tinted, as JPEG, atomically."""
    img = Image.fromarray(overlay(image, mask))
    atomic_save(Path(path), lambda tmp: img.save(tmp, format="JPEG", quality=90))


def find_images(targets: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Expand files and folders into ``(image path, output stem)`` pairs.

    Files are taken as given (output stem = file stem). Folders are searched
    recursively for image extensions; their output stem keeps the path
    relative to the folder. Missing paths raise FileNotFoundError.
    """
    pairs: list[tuple[Path, Path]] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
                pairs.append((file, file.relative_to(path).with_suffix("")))
        elif path.exists():
            pairs.append((path, Path(path.stem)))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder; check the target path")
    return pairs


