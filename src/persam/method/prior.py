"""The location prior (PerSAM section 3.2) and the boxes that prompts carry.

Points come from the full-resolution similarity map, answered from the grid
(``persam.method.resample``): its extremes (PerSAM's positive and negative
point, PerSAM-F's positive point) and its top-k pixels (the video protocol).
Boxes: tight boxes of masks and label maps, enlarged boxes and their centres.

Conventions: photo pixels, (x, y) points, XYXY boxes with inclusive pixel
indices for tight mask boxes; label maps are (H, W) uint8 with 0 = background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from persam.backends.base import ImageGeometry
from persam.method.resample import ChainOperator, similarity_operator

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LocationPrior:
    """Points chosen from the similarity map, in photo pixels.

    Attributes:
        positive_xy: (x, y) of the full-resolution map's arg-max.
        negative_xy: (x, y) of its arg-min.
    """

    positive_xy: tuple[int, int]
    negative_xy: tuple[int, int]


def location_prior(sim: torch.Tensor, geometry: ImageGeometry) -> LocationPrior:
    """Arg-max / arg-min of the reference's full-resolution similarity map, from the (h, w) grid ``sim``."""
    op = similarity_operator(geometry)
    return LocationPrior(positive_xy=op.argmax(sim, largest=True), negative_xy=op.argmax(sim, largest=False))


def positive_point(sim: torch.Tensor, geometry: ImageGeometry) -> tuple[int, int]:
    """(x, y) of the full-resolution map's arg-max (PerSAM-F's one prompt point)."""
    return similarity_operator(geometry).argmax(sim)


def topk_points(op: ChainOperator, grid: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` highest pixels of the full-resolution map ``op.ry @ grid @ op.rx.T``.

    The same pixels as ``torch.topk`` on the full (H, W) map (computed in
    float64), in decreasing value; equal values are taken in row-major order.
    Only the rows that can hold one of the ``k`` values are built: every value
    of row ``i`` is at most ``max(op.ry[i] @ grid)`` because the rows of
    ``op.rx`` are convex weights.

    Args:
        op: the grid-to-photo operator (``persam.method.resample.similarity_operator``).
        grid: (n_y, n_x) map on the grid (e.g. the cosine similarity).
        k: how many pixels (at least 1; at most H * W are returned).

    Returns:
        ``k`` (x, y) pixel positions in photo coordinates.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    g = grid.double().cpu()
    rows = op.ry @ g  # (H, n_x): row i of the full map is rows[i] @ rx.T
    height, width = op.ry.shape[0], op.rx.shape[0]
    k = min(k, height * width)
    bound = rows.max(dim=1).values
    seed_rows = torch.argsort(bound, descending=True, stable=True)[: math.ceil(k / width)]
    floor = (rows[seed_rows] @ op.rx.T).flatten().topk(k).values[-1]
    cand = torch.nonzero(bound >= floor).flatten()  # ascending row numbers
    flat = (rows[cand] @ op.rx.T).flatten()  # row-major order of the full map
    last = flat.topk(k).values[-1]
    above = torch.nonzero(flat > last).flatten()
    above = above[torch.argsort(flat[above], descending=True, stable=True)]
    ties = torch.nonzero(flat == last).flatten()[: k - above.numel()]
    chosen = torch.cat([above, ties])
    ys = cand[chosen // width]
    xs = chosen % width
    return [(int(x), int(y)) for x, y in zip(xs.tolist(), ys.tolist())]


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight XYXY box (inclusive pixel indices) of an (H, W) bool mask, or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def enlarge_box(box: Box, margin: int, hw: tuple[int, int]) -> Box:
    """A box grown by ``margin`` pixels on each side and clipped to the frame.

    As the reference, the low corner is clipped at 0 and the high corner at
    the frame's width / height (the right / bottom edge of the last pixel).
    """
    h, w = hw
    x0, y0, x1, y1 = box
    return max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, w), min(y1 + margin, h)


def box_centre(box: Box) -> tuple[int, int]:
    """(x, y) integer centre of a box (floor of the mean of the corners)."""
    x0, y0, x1, y1 = box
    return (x0 + x1) // 2, (y0 + y1) // 2


def label_boxes(labels: np.ndarray, object_ids: list[int]) -> dict[int, Box | None]:
    """Tight box of each object id in an (H, W) label map; None for ids with no pixel.

    Boxes stay keyed by object id whatever ids are present (the reference
    re-indexes them by the labels still present, handing boxes to the wrong
    objects when one vanishes).
    """
    return {oid: mask_box(labels == oid) for oid in object_ids}
