"""PerSeg metrics, as PerSAM's ``eval_miou.py`` and boundary-iou-api compute them (pure numpy).

Object IoU = sum(intersection) / (sum(union) + 1e-10) over its test images; mIoU = mean over
objects. Boundary IoU likewise on :func:`mask_to_boundary` bands. Masks are ``(H, W)``,
nonzero = object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from persam.errors import InputError
from persam.eval.common import BoolArray, as_mask, as_mask_pair, window_sum


def erode_square(mask: ArrayLike, iterations: int) -> BoolArray:
    """Erode an ``(H, W)`` mask ``iterations`` times by a 3x3 square, zeros outside; ``(H, W)`` bool.

    Equals a ``(2k+1)``-square minimum filter with zeros outside (boundary-iou-api's
    ``cv2.erode`` of the mask padded by one zero pixel), done as separable window sums.
    """
    m = as_mask(mask, "mask")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if iterations == 0:
        return m.copy()
    kx, ky = min(iterations, m.shape[1]), min(iterations, m.shape[0])  # larger k erodes everything too
    rows: BoolArray = window_sum(m, kx, axis=1) == 2 * kx + 1
    eroded: BoolArray = window_sum(rows, ky, axis=0) == 2 * ky + 1
    return eroded


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Boundary band width ``d = max(1, int(round(ratio * sqrt(h^2 + w^2))))`` in pixels."""
    return max(int(round(dilation_ratio * math.sqrt(height * height + width * width))), 1)


def mask_to_boundary(mask: ArrayLike, dilation_ratio: float = 0.02, *, dilation: int | None = None) -> BoolArray:
    """Inner boundary band ``mask & ~erode(mask, d)`` of an ``(H, W)`` mask (boundary-iou-api).

    Pixels outside the image count as background, so a mask touching the border gets a
    band along that border. ``dilation`` (pixels) overrides ``dilation_ratio`` (fraction of
    the diagonal, see :func:`boundary_dilation`). Returns an ``(H, W)`` boolean array.
    """
    m = as_mask(mask, "mask")
    d = boundary_dilation(m.shape[0], m.shape[1], dilation_ratio) if dilation is None else dilation
    return m & ~erode_square(m, d)


@dataclass(frozen=True)
class PerSegImageCounts:
    """Pixel counts of one PerSeg test image: mask and boundary intersection/union."""

    intersection: int
    union: int
    boundary_intersection: int
    boundary_union: int

    @property
    def iou(self) -> float:
        """Per-image IoU as a fraction; 1.0 when both masks are empty."""
        return self.intersection / self.union if self.union else 1.0

    @property
    def boundary_iou(self) -> float:
        """Per-image boundary IoU as a fraction; defined as 1.0 when both boundaries are empty."""
        return self.boundary_intersection / self.boundary_union if self.boundary_union else 1.0


def perseg_image_counts(pred: ArrayLike, gt: ArrayLike, dilation_ratio: float = 0.02) -> PerSegImageCounts:
    """Intersection/union counts of two ``(H, W)`` masks and of their boundary bands."""
    p, g = as_mask_pair(pred, gt)
    pb, gb = mask_to_boundary(p, dilation_ratio), mask_to_boundary(g, dilation_ratio)
    return PerSegImageCounts(
        intersection=int(np.count_nonzero(p & g)),
        union=int(np.count_nonzero(p | g)),
        boundary_intersection=int(np.count_nonzero(pb & gb)),
        boundary_union=int(np.count_nonzero(pb | gb)),
    )


def boundary_iou(pred: ArrayLike, gt: ArrayLike, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of one ``(H, W)`` image pair as a fraction (1.0 when both boundaries are empty)."""
    return perseg_image_counts(pred, gt, dilation_ratio).boundary_iou


@dataclass(frozen=True)
class PerSegObjectScore:
    """Summed counts of one PerSeg object over its test images; ``iou``/``biou`` in percent."""

    name: str
    num_images: int
    intersection: int
    union: int
    boundary_intersection: int
    boundary_union: int

    @property
    def iou(self) -> float:
        """``100 * sum(intersection) / (sum(union) + 1e-10)``."""
        return 100.0 * self.intersection / (self.union + 1e-10)

    @property
    def biou(self) -> float:
        """Boundary IoU aggregated like :attr:`iou`, in percent."""
        return 100.0 * self.boundary_intersection / (self.boundary_union + 1e-10)


def score_perseg_object(name: str, images: Iterable[PerSegImageCounts]) -> PerSegObjectScore:
    """Sum the per-image counts of one object."""
    counts = list(images)
    return PerSegObjectScore(
        name=name,
        num_images=len(counts),
        intersection=sum(c.intersection for c in counts),
        union=sum(c.union for c in counts),
        boundary_intersection=sum(c.boundary_intersection for c in counts),
        boundary_union=sum(c.boundary_union for c in counts),
    )


@dataclass(frozen=True)
class PerSegReport:
    """PerSeg results: per-object scores and the means over objects (percent)."""

    objects: tuple[PerSegObjectScore, ...]
    miou: float
    mbiou: float

    def as_dict(self) -> dict[str, float | dict[str, float]]:
        """``{"mIoU": .., "bIoU": .., "<object>": {"IoU": .., "bIoU": ..}, ...}`` in percent."""
        out: dict[str, float | dict[str, float]] = {"mIoU": self.miou, "bIoU": self.mbiou}
        out.update({o.name: {"IoU": o.iou, "bIoU": o.biou} for o in self.objects})
        return out


def summarize_perseg(objects: Iterable[PerSegObjectScore]) -> PerSegReport:
    """Average the per-object IoU and bIoU (percent)."""
    objs = tuple(objects)
    if not objs:
        raise InputError("no PerSeg objects to summarise; expected at least one object")
    return PerSegReport(objs, float(np.mean([o.iou for o in objs])), float(np.mean([o.biou for o in objs])))
