"""The one reader of masks and label maps, their validation, and their PNG writers.

Every mask read in persam goes through this module:

- :func:`read_binary_mask`: an object mask, (H, W) bool. ``rule="values"``
  (default): palette images give their index values, grey images their
  levels, colour images count any nonzero R, G or B; object = nonzero (or
  == ``label``). ``rule="gray"``: the *displayed* colour is turned into
  8-bit grey with OpenCV's fixed-point BT.601 weights and object = grey > 0,
  exactly as ``cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2GRAY) > 0`` in
  PerSAM's evaluation.
- :func:`read_label_map`: object ids, (H, W) uint8. Palette index = id, grey
  level = id; a colour image whose pixels are all grey (R = G = B) gives
  that level; other colours are mapped through the DAVIS palette
  (``colours="davis"``, an unknown colour is an error) or refused
  (``colours="refuse"``).
- :func:`as_label_map`: the checks of an in-memory label map (2-D, integer,
  0..255; bool = id 1).
- :func:`first_frame_labels`: the checks of a video's first-frame label map
  (dtype and range, void pixels, a drawn 0/255 mask as one object,
  anti-aliased masks, size against the frame, at least one object).

Sources are a path, a PIL image or an array. Images are read in display
orientation (EXIF), like photos; an alpha channel is ignored. Errors are
one-line ``ValueError`` / ``FileNotFoundError`` naming the file and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from persam.errors import InputError
from persam.io.atomic import atomic_save
from persam.io.images import ImageLike, open_image

#: A first-frame mask with more distinct ids than this looks anti-aliased.
MAX_OBJECT_IDS = 32
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")


def _name(source: ImageLike) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "the mask"


def _image(source: ImageLike) -> Image.Image:
    img = source if isinstance(source, Image.Image) else open_image(source)
    return ImageOps.exif_transpose(img)


def _values(source: ImageLike) -> np.ndarray:
    """Pixel values: (H, W) for palette (indices) / grey images, (H, W, 3) RGB for colour images.

    Arrays are returned as given (after ``np.asarray``).
    """
    if isinstance(source, np.ndarray):
        return source
    img = _image(source)
    if img.mode in _COLOUR_MODES:
        return np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    return arr[..., 0] if arr.ndim == 3 else arr  # LA, PA: drop alpha


def _bt601_gray(rgb: np.ndarray) -> np.ndarray:
    """8-bit grey of (H, W, 3) RGB with OpenCV's fixed-point BT.601 weights (cv2.COLOR_BGR2GRAY)."""
    c = rgb[..., :3].astype(np.int32)
    return (c[..., 0] * 4899 + c[..., 1] * 9617 + c[..., 2] * 1868 + (1 << 13)) >> 14


def read_binary_mask(
    source: ImageLike, label: int | None = None, *, rule: Literal["values", "gray"] = "values"
) -> np.ndarray:
    """Read an object mask as (H, W) bool, True = object.

    Args:
        source: a path, a PIL image or an array ((H, W), or (H, W, C) colour).
        label: keep only pixels whose id (as :func:`read_label_map` reads
            it) equals this value; None keeps every nonzero pixel.
        rule: ``"values"`` (pixel values, see the module doc) or ``"gray"``
            (PerSAM's evaluation: BT.601 grey of the displayed colour > 0;
            ``label`` must be None).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable image, array of another shape, ``label`` not
            in the mask ("label N is not in MASK (values present: ...)").
    """
    if label is not None:
        if rule != "values":
            raise ValueError("a mask label can only be chosen with rule='values'")
        labels = read_label_map(source)
        if not (labels == label).any():
            present = ", ".join(str(int(v)) for v in np.unique(labels)[:20])
            raise InputError(
                f"label {label} is not in {_name(source)} (values present: {present}); choose one of those as the label"
            )
        return labels == label
    if rule == "gray":
        if isinstance(source, np.ndarray):
            arr = source
        else:
            img = _image(source)
            if img.mode in ("P", "PA") or img.mode in _COLOUR_MODES:
                img = img.convert("RGB")
            arr = np.asarray(img)
        if arr.ndim == 3:
            arr = _bt601_gray(arr) if arr.shape[2] >= 3 else arr[..., 0]
    elif rule == "values":
        arr = _values(source)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
    else:
        raise ValueError(f"mask rule {rule!r}; pass 'values' or 'gray'")
    if arr.ndim != 2:
        raise InputError(f"{_name(source)} has shape {arr.shape}; pass a single-channel (H, W) mask")
    return arr != 0


def read_label_map(source: ImageLike, *, colours: Literal["davis", "refuse"] = "davis") -> np.ndarray:
    """Read object ids as an (H, W) uint8 label map (0 = background).

    Args:
        source: a path, a PIL image or an array.
        colours: how a colour image that is not all grey is read: ``"davis"``
            maps each DAVIS palette colour to its index; ``"refuse"`` raises.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable image, unknown colour (or any colour with
            ``"refuse"``), non-integer values, values above 255.
    """
    name = _name(source)
    arr = _values(source)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = rgb[..., 0]
        elif colours == "refuse":
            mode = source.mode if isinstance(source, Image.Image) else "RGB"
            raise InputError(
                f"mask {name} is a colour ({mode}) image; expected a palette ('P') or grayscale "
                "('L') PNG whose pixel values are object ids"
            )
        else:
            arr = _davis_colours_to_ids(rgb, name)
    return as_label_map(arr, name)


def as_label_map(labels: np.ndarray, name: str = "the label map") -> np.ndarray:
    """Check an in-memory label map; returns it as (H, W) uint8 (bool -> id 1).

    Raises:
        ValueError: not 2-D, not integer (or bool), ids outside 0..255.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise InputError(f"{name} has shape {arr.shape}; pass an (H, W) array of object ids")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} has dtype {arr.dtype}; pass integer object ids (an 8-bit PNG or uint8 array)")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"{name} has ids outside 0..255; pass 8-bit object ids")
    return arr.astype(np.uint8)


def first_frame_labels(
    labels: np.ndarray,
    frame_hw: tuple[int, int] | None = None,
    *,
    name: str = "the first-frame mask",
    frame: str = "the frame is",
    void: int | None = None,
    drawn_mask: bool = False,
) -> np.ndarray:
    """Validate a video's first-frame label map; returns (H, W) uint8 ids.

    Args:
        labels: (H, W) ids (any integer dtype, or bool = one object).
        frame_hw: (H, W) of the first frame; None skips the size check.
        name: the file (or words) to name in errors.
        frame: the first frame as named in the size error, with its verb
            (``"the frame is"``, ``"the frames of clip.mp4 are"``).
        void: an id meaning "not annotated" (DAVIS: 255), read as background.
        drawn_mask: the rules for a mask file a person made: a 0/255 binary
            mask becomes object 1, and more than ``MAX_OBJECT_IDS`` ids (an
            anti-aliased mask) is an error. Off for arrays given through the
            API, whose ids are kept as given.

    Raises:
        ValueError: bad dtype/shape/range, an anti-aliased drawn mask, size
            differing from the frame, no object.
    """
    arr = as_label_map(labels, name)
    if void is not None:
        arr = np.where(arr == void, 0, arr).astype(np.uint8)
    ids = np.unique(arr)
    ids = ids[ids != 0]
    if drawn_mask and ids.tolist() == [255]:
        arr, ids = (arr == 255).astype(np.uint8), np.array([1])
    if drawn_mask and ids.size > MAX_OBJECT_IDS:
        raise InputError(
            f"{name}: {ids.size} different nonzero values, like an anti-aliased mask; "
            "save it as a binary 0/255 mask or a palette PNG of object ids"
        )
    if frame_hw is not None and arr.shape != tuple(frame_hw):
        raise InputError(
            f"{name} is {arr.shape[1]}x{arr.shape[0]} but {frame} {frame_hw[1]}x{frame_hw[0]}; "
            "pass the mask drawn on the first frame, at its size"
        )
    if not ids.size:
        raise InputError(
            f"{name} has no object pixel (empty: all 0); mark each object with its id, or 255 for one object"
        )
    return arr


def _davis_colours_to_ids(rgb: np.ndarray, name: str) -> np.ndarray:
    palette = np.asarray(davis_palette(), dtype=np.int64).reshape(256, 3)
    shifts = np.array([16, 8, 0])
    codes = (rgb.astype(np.int64) << shifts).sum(axis=2)
    table = {int(c): i for i, c in reversed(list(enumerate((palette << shifts).sum(axis=1))))}
    uniq, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(u) for u in uniq if int(u) not in table]
    if unknown:
        c = unknown[0]
        raise InputError(
            f"{name}: colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) is not a DAVIS palette colour; "
            "pass a palette or grayscale PNG whose values are object ids"
        )
    return np.asarray([table[int(u)] for u in uniq], dtype=np.uint8)[inverse.reshape(codes.shape)]


#: zlib level of the mask PNGs: the fastest (1), as OpenCV's default. Against Pillow's default (6) a
#: mask is written sooner and its file is larger (a binary mask's PNG stays at tens of KB).
MASK_PNG_LEVEL = 1


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an (H, W) bool mask as a single-channel PNG (0 background, 255 object), atomically."""
    pixels = np.asarray(mask, dtype=bool).view(np.uint8) * np.uint8(255)
    img = Image.fromarray(pixels, mode="L")
    atomic_save(Path(path), lambda tmp: img.save(tmp, format="PNG", compress_level=MASK_PNG_LEVEL))


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
