"""Label Studio regions <-> masks, boxes and clicks, in photo pixels.

Label Studio places a region in percent of the photo (``x``, ``y``, ``width``, ``height`` and polygon
``points`` from 0 to 100, x right, y down, from the top-left corner) and names the photo's size in pixels
(``original_width``, ``original_height``). A brush region is a run-length encoding of the photo's RGBA
pixels (``value.format == "rle"``), encoded and decoded by the SDK's converter
(``label_studio_sdk.converter.brush``; the mask is the alpha channel). Here, masks are (H, W) bool in photo
pixels, boxes XYXY (x0, y0, x1, y1) and points (x, y) in photo pixels.

Every reader takes what a server or a browser sent (any JSON) and returns a region or raises
``persam.errors.InputError`` with a one-line reason.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import numpy as np

from persam.errors import InputError
from persam.labelstudio.config import CONTROLS, Control, Kind, LabelingConfig

#: the largest photo a region may name (width x height), as the image reader's default guard
MAX_REGION_PIXELS = 64_000_000


@dataclass(frozen=True)
class Region:
    """One region of an annotation, in photo pixels.

    Attributes:
        label: its label (the first one, when several are given).
        kind: "brush", "polygon", "rectangle" or "keypoint".
        shape: (H, W) of the photo, from ``original_height`` / ``original_width``.
        mask: (H, W) bool for brush and polygon regions, else None.
        box: XYXY photo pixels for rectangles, else None.
        point: (x, y) photo pixels for keypoints, else None.
        positive: a keypoint marks the object (False: background, ``is_positive: false``).
    """

    label: str
    kind: Kind
    shape: tuple[int, int]
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    positive: bool = True


def _bad(what: str) -> InputError:
    return InputError(f"a region {what}", field="result")


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"has no valid {what} (a finite number)")
    return float(value)


def _size(result: dict) -> tuple[int, int]:
    w, h = result.get("original_width"), result.get("original_height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
        raise _bad("has no original_width / original_height (whole numbers of pixels)")
    if w * h > MAX_REGION_PIXELS:
        raise _bad(f"names a {w}x{h} photo, over {MAX_REGION_PIXELS} pixels")
    return h, w


def _percent(value: object, what: str) -> float:
    v = _number(value, what)
    if not -1e-6 <= v <= 100 + 1e-6:
        raise _bad(f"has {what} {v} outside 0..100 (percent of the photo)")
    return min(max(v, 0.0), 100.0)


def decode_brush(rle: object, shape: tuple[int, int]) -> np.ndarray:
    """A brush region's RLE (a list of bytes) -> (H, W) bool mask (alpha channel > 0)."""
    from label_studio_sdk.converter.brush import decode_rle

    h, w = shape
    if not isinstance(rle, list) or not rle or not all(isinstance(b, int) and 0 <= b <= 255 for b in rle):
        raise _bad("has no brush RLE (a list of bytes 0..255)")
    if len(rle) < 6 or int.from_bytes(bytes(rle[:4]), "big") != h * w * 4:
        raise _bad(f"has a brush RLE that is not of a {w}x{h} photo")
    try:
        values = decode_rle(rle)
    except (ValueError, IndexError, OverflowError):  # the SDK's decoder on a damaged bit stream
        raise _bad("has a damaged brush RLE") from None
    if values.size != h * w * 4:
        raise _bad(f"has a brush RLE that is not of a {w}x{h} photo")
    return values.reshape(h, w, 4)[..., 3] > 0


def polygon_mask(points: object, shape: tuple[int, int]) -> np.ndarray:
    """Polygon ``points`` ([[x%, y%], ...], 3 or more) -> (H, W) bool mask, filled."""
    from PIL import Image, ImageDraw

    h, w = shape
    if not isinstance(points, list) or len(points) < 3 or len(points) > 100_000:
        raise _bad("has no polygon points (a list of 3 or more [x, y] in percent)")
    xy = []
    for p in points:
        if not isinstance(p, list | tuple) or len(p) != 2:
            raise _bad("has a polygon point that is not [x, y]")
        xy.append((_percent(p[0], "a polygon x") * w / 100, _percent(p[1], "a polygon y") * h / 100))
    canvas = Image.new("1", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(xy, fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def read_region(result: object) -> Region | None:
    """One element of an annotation's ``result`` -> a ``Region``; None for what persam does not read (text,
    choices, relations, other tools).

    Raises:
        InputError: a brush, polygon, rectangle or keypoint region that is malformed.
    """
    if not isinstance(result, dict):
        raise _bad("is not a JSON object")
    rtype = result.get("type")
    kind = CONTROLS.get(rtype.lower()) if isinstance(rtype, str) else None
    if kind is None:
        return None
    value = result.get("value")
    if not isinstance(value, dict):
        raise _bad("has no value")
    labels = value.get(rtype.lower(), value.get(rtype))
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise _bad(f"has no {rtype.lower()} (its label)")
    label, shape = labels[0], _size(result)
    h, w = shape
    if kind == "brush":
        if value.get("format") != "rle":
            raise _bad('is a brush region whose format is not "rle"')
        return Region(label, kind, shape, mask=decode_brush(value.get("rle"), shape))
    if kind == "polygon":
        return Region(label, kind, shape, mask=polygon_mask(value.get("points"), shape))
    x, y = _percent(value.get("x"), "x"), _percent(value.get("y"), "y")
    if kind == "keypoint":
        positive = result.get("is_positive", value.get("is_positive", True)) is not False
        return Region(label, kind, shape, point=(x * w / 100, y * h / 100), positive=positive)
    if _number(value.get("rotation", 0) or 0, "rotation") % 360:
        raise _bad("is a rotated rectangle; draw it without rotation")
    bw, bh = _percent(value.get("width"), "width"), _percent(value.get("height"), "height")
    box = (x * w / 100, y * h / 100, min(x + bw, 100) * w / 100, min(y + bh, 100) * h / 100)
    return Region(label, kind, shape, box=box)


def read_regions(results: object) -> list[Region]:
    """Every region persam reads in an annotation's ``result`` list, in order."""
    if not isinstance(results, list):
        raise InputError("an annotation's result is not a list of regions", field="result")
    return [r for r in (read_region(item) for item in results) if r is not None]


# --- writing predictions ----------------------------------------------------------------------------
def _base(control: Control, config: LabelingConfig, shape: tuple[int, int], score: float) -> dict:
    h, w = shape
    return {
        "id": uuid.uuid4().hex[:10],
        "type": control.type,
        "from_name": control.name,
        "to_name": config.image,
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "score": float(score),
        "readonly": False,
    }


def mask_results(mask: np.ndarray, label: str, score: float, control: Control, config: LabelingConfig) -> list[dict]:
    """Prediction regions of one (H, W) bool mask in ``control``'s kind: one brush region (the SDK's RLE),
    one polygon per outer contour (OpenCV's, 3 or more points), or the mask's bounding rectangle. An empty
    mask gives none."""
    h, w = mask.shape
    if not mask.any():
        return []
    if control.kind == "brush":
        from label_studio_sdk.converter.brush import mask2rle

        region = _base(control, config, (h, w), score)
        region["value"] = {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]}
        return [region]
    if control.kind == "polygon":
        import cv2

        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for contour in contours:
            pts = contour.reshape(-1, 2)
            if len(pts) < 3:
                continue
            region = _base(control, config, (h, w), score)
            points = [[float(x) * 100 / w, float(y) * 100 / h] for x, y in pts]
            region["value"] = {"points": points, "closed": True, "polygonlabels": [label]}
            out.append(region)
        return out
    ys, xs = np.nonzero(mask)
    region = _base(control, config, (h, w), score)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    region["value"] = {
        "x": x0 * 100 / w,
        "y": y0 * 100 / h,
        "width": (x1 - x0) * 100 / w,
        "height": (y1 - y0) * 100 / h,
        "rotation": 0,
        "rectanglelabels": [label],
    }
    return [region]
