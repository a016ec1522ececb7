"""What segmenting a photo returns: typed results in photo pixels (numpy), built from the method's output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persam.backends.base import EncodedImage
from persam.method.decoder import PromptRecord
from persam.method.parts import PartScore
from persam.method.refine import MethodOutput
from persam.method.resample import upscale_logits


@dataclass(frozen=True)
class SegmentationResult:
    """The concept found in one photo.

    Attributes:
        mask: (H, W) bool, photo pixels.
        score: the decoder's predicted IoU of the final mask.
        points_xy: (N, 2) int (x, y) prompt points in photo pixels.
        point_labels: (N,) int, 1 = foreground, 0 = background.
        box_xyxy: (4,) int XYXY box of the last refinement prompt, or None.
        low_res_logits: (4h, 4w) float32 decoder logits of the final mask.
        present: whether the concept was found; False only when absence
            detection was asked for and either the best similarity (then
            ``score``) fell below the concept's presence threshold, or (SAM 2)
            the decoder's object score of the final mask was <= 0.
        notes: anything that left the usual path (e.g. an empty stage kept).
        prompts: the prompts of every decoder pass that made the mask, first
            pass first, then each refinement's (photo pixels); empty when absent by
            similarity (no decoder pass ran), kept when absent by object score.
        part_count: the part count the part-aware prior chose, or None (similarity prior).
        part_scores: each part count's transport score (part-aware prior), in increasing count.
        object_score: SAM 2's object-score logit of the final mask's pass (> 0: an
            object is there), or None (SAM 1 family, or absent by similarity).
    """

    mask: np.ndarray
    score: float
    points_xy: np.ndarray
    point_labels: np.ndarray
    box_xyxy: np.ndarray | None
    low_res_logits: np.ndarray
    present: bool = True
    notes: tuple[str, ...] = ()
    prompts: tuple[PromptRecord, ...] = ()
    part_count: int | None = None
    part_scores: tuple[PartScore, ...] = ()
    object_score: float | None = None

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != bool:
            raise TypeError("mask must be an (H, W) bool array")


@dataclass(frozen=True)
class InstancesResult:
    """Every instance of the concept found in one photo.

    Attributes:
        labels: (H, W) uint8 label map, 0 = background, i = instance i.
        instances: the instances, in the order found (best similarity first).
    """

    labels: np.ndarray
    instances: list[SegmentationResult]


def absent_result(
    encoded: EncodedImage, best: float, threshold: float, rejected: MethodOutput | None = None
) -> SegmentationResult:
    """An empty result: the best similarity ``best`` is below ``threshold``, or
    (``rejected``, SAM 2) the method's mask had an object score <= 0."""
    h, w = encoded.geometry.original_hw
    lh, lw = encoded.geometry.low_res_hw
    if rejected is not None:
        return SegmentationResult(
            mask=np.zeros((h, w), dtype=bool),
            score=best,
            points_xy=rejected.points_xy.cpu().numpy().astype(np.int64),
            point_labels=rejected.point_labels.cpu().numpy().astype(np.int64),
            box_xyxy=None,
            low_res_logits=np.full((lh, lw), -20.0, dtype=np.float32),
            present=False,
            notes=(
                f"absent: object score {rejected.object_score:.4f} <= 0 (best similarity {best:.4f} passed "
                f"the presence threshold {threshold:.4f})",
            ),
            prompts=tuple(rejected.prompts),
            object_score=rejected.object_score,
        )
    return SegmentationResult(
        mask=np.zeros((h, w), dtype=bool),
        score=best,
        points_xy=np.zeros((0, 2), dtype=np.int64),
        point_labels=np.zeros((0,), dtype=np.int64),
        box_xyxy=None,
        low_res_logits=np.full((lh, lw), -20.0, dtype=np.float32),
        present=False,
        notes=(f"absent: best similarity {best:.4f} < presence threshold {threshold:.4f}",),
    )


def method_result(
    out: MethodOutput, encoded: EncodedImage, part_count: int | None = None, part_scores: tuple[PartScore, ...] = ()
) -> SegmentationResult:
    full = upscale_logits(out.low_res_logits[None], encoded.geometry)[0]
    return SegmentationResult(
        mask=(full > 0).cpu().numpy(),
        score=out.score,
        points_xy=out.points_xy.cpu().numpy().astype(np.int64),
        point_labels=out.point_labels.cpu().numpy().astype(np.int64),
        box_xyxy=None if out.box_xyxy is None else np.asarray(out.box_xyxy, dtype=np.int64),
        low_res_logits=out.low_res_logits.float().cpu().numpy(),
        notes=tuple(out.notes),
        prompts=tuple(out.prompts),
        part_count=part_count,
        part_scores=part_scores,
        object_score=out.object_score,
    )
