"""The one image-file reader (size-guarded, any mode, EXIF-rotated) and overlay writing.

Images: a path, a PIL image or an array. Whatever the source (grayscale,
RGBA, palette, CMYK, 16-bit, EXIF-rotated), the result is (H, W, 3) uint8
RGB in display orientation.

Every image file persam reads (photos, masks, video frames) is opened by
:func:`open_image`, which refuses files of more than :func:`max_pixels`
pixels (default 64 megapixels) from their header, before decoding: a small
file can declare a huge image (a "decompression bomb"). Errors are one-line
``ValueError``/``FileNotFoundError`` messages naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from persam.errors import InputError, MissingInputError, OptionsError
from persam.io.atomic import atomic_save

ImageLike = str | os.PathLike | Image.Image | np.ndarray
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

#: Default largest image (width x height) a file may declare: 64 megapixels.
DEFAULT_MAX_PIXELS = 64_000_000
_max_pixels: int | None = DEFAULT_MAX_PIXELS
_UNSET = object()
#: What a broken or hostile file makes Pillow's decoders raise.
DECODE_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    SyntaxError,
    EOFError,
    struct.error,
    ZeroDivisionError,
    Image.DecompressionBombError,
)
#: Pillow's own bomb check reads a module global; it is switched off (our limit applies instead) under this lock.
_PIL_LIMIT_LOCK = threading.Lock()


def max_pixels() -> int | None:
    """The current pixel limit of :func:`open_image` (None = no limit)."""
    return _max_pixels


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit of :func:`open_image` for this process (e.g. from ``--max-pixels``).

    Args:
        limit: largest width x height accepted, or None for no limit.

    Raises:
        ValueError: ``limit`` is not a positive integer or None.
    """
    global _max_pixels
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise OptionsError(f"the pixel limit must be a positive whole number (or None for no limit), got {limit!r}")
    _max_pixels = limit


@contextlib.contextmanager
def pixel_limit(limit: int | None) -> Iterator[None]:
    """Meanwhile, :func:`open_image` refuses photos over ``limit`` pixels (width x height); None keeps the
    current limit, 0 means no limit."""
    if limit is None:
        yield
        return
    previous = max_pixels()
    set_max_pixels(limit or None)
    try:
        yield
    finally:
        set_max_pixels(previous)


def _open_header(path) -> Image.Image:
    """``Image.open`` (header only) with Pillow's bomb check replaced by ours."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(source: str | os.PathLike, *, limit: int | None | object = _UNSET, load: bool = True) -> Image.Image:
    """Open an image file, refuse it if it declares too many pixels, and decode it.

    Args:
        source: the file.
        limit: largest width x height accepted; default :func:`max_pixels`;
            None = no limit.
        load: decode the pixels (False: header only, e.g. to read the size).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image (unknown format, empty, truncated,
            damaged), or more pixels than ``limit``.
    """
    path = Path(source)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file; check the path")
    return _open_checked(path, str(path), limit, load)


def _open_checked(source, name: str, limit: int | None | object, load: bool) -> Image.Image:
    """``open_image``'s checks on a path or a binary file object; ``name`` is the file's name in messages."""
    cap = _max_pixels if limit is _UNSET else limit
    try:
        img = _open_header(source)
    except DECODE_ERRORS as exc:
        raise InputError(f"{name}: not a readable image ({exc.__class__.__name__}); pass a JPEG or PNG file") from None
    w, h = img.size
    if cap is not None and w * h > cap:
        img.close()
        raise InputError(
            f"{name}: {w}x{h} is {w * h / 1e6:.4g} megapixels, above the limit of {cap / 1e6:g} "
            "megapixels (a guard against decompression bombs); downscale the image, or raise the "
            "limit (--max-pixels N) if you trust the file"
        )
    if load:
        try:
            img.load()
        except DECODE_ERRORS as exc:
            img.close()
            raise InputError(
                f"{name}: not a readable image ({exc.__class__.__name__}: {_first_line(exc)}); "
                "pass a complete JPEG or PNG file"
            ) from None
    return img


def decode_image(data: bytes, name: str, *, limit: int | None | object = _UNSET) -> np.ndarray:
    """Decode a photo file's bytes (read from any filesystem) as (H, W, 3) uint8 RGB, with
    :func:`open_image`'s size guard and one-line errors naming ``name``.

    Raises:
        ValueError: not a readable image, or more pixels than ``limit``.
    """
    import io

    with _open_checked(io.BytesIO(data), name, limit, True) as img:
        return _convert(img, name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else "no detail"


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
        return _convert(source, "the given image")
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype == np.uint16:
            arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
        elif arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            raise InputError(f"image array has dtype {arr.dtype}; pass uint8 (or uint16) pixel values")
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise InputError(f"image array has shape {source.shape}; pass (H, W), (H, W, 3) or (H, W, 4)")
        return np.ascontiguousarray(arr[..., :3])
    with open_image(source) as img:
        return _convert(img, str(source))


def _convert(img: Image.Image, name: str) -> np.ndarray:
    try:
        return _to_rgb_uint8(img)
    except DECODE_ERRORS as exc:
        raise InputError(
            f"{name}: cannot read the orientation or colours of this {img.mode} image "
            f"({exc.__class__.__name__}); save it again as an 8-bit RGB JPEG or PNG"
        ) from None


def overlay(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40), alpha: float = 0.5
) -> np.ndarray:
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
            raise MissingInputError(f"{path}: no such file or folder; check the target path")
    return pairs
