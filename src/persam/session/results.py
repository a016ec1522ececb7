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
        low_res_logits: (4h, 4w) float32 decoder logits of the final mask.
        present: whether the concept was found; False only when absence
            detection was asked for and either the best similarity (then
            ``score``) fell below the concept's presence threshold, or (SAM 2)
            the decoder's object score of the final mask was <= 0.
        notes: anything that left the usual path (e.g. an empty stage kept).
        prompts: the prompts of every decoder pass that made the mask, first
            pass first, then each refinement's (photo pixels); empty when absent by
            similarity (no decoder pass ran), kept when absent by object score.
            The result's one record of its prompts: ``points_xy``,
            ``point_labels`` and ``box_xyxy`` are views of it.
        part_count: the part count the part-aware prior chose, or None (similarity prior).
        part_scores: each part count's transport score (part-aware prior), in increasing count.
        object_score: SAM 2's object-score logit of the final mask's pass (> 0: an
            object is there), or None (SAM 1 family, or absent by similarity).
        matched_xy: (P, 2) int64 (x, y) photo pixels, the Matcher prior only:
            the matched points its prompt sets were sampled from; None otherwise.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    present: bool = True
    notes: tuple[str, ...] = ()
    prompts: tuple[PromptRecord, ...] = ()
    part_count: int | None = None
    part_scores: tuple[PartScore, ...] = ()
    object_score: float | None = None
    matched_xy: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != bool:
            raise TypeError("mask must be an (H, W) bool array")

    @property
    def points_xy(self) -> np.ndarray:
        """(N, 2) int64 (x, y) photo pixels: the first decoder pass's points (the
        location prior's choice, which each refinement repeats); (0, 2) when no pass ran."""
        if not self.prompts:
            return np.zeros((0, 2), dtype=np.int64)
        return np.rint(np.asarray(self.prompts[0].points_xy, dtype=np.float64).reshape(-1, 2)).astype(np.int64)

    @property
    def point_labels(self) -> np.ndarray:
        """(N,) int64 labels of ``points_xy``: 1 = foreground, 0 = background."""
        labels = self.prompts[0].point_labels if self.prompts else ()
        return np.asarray(labels, dtype=np.int64).reshape(-1)

    @property
    def box_xyxy(self) -> np.ndarray | None:
        """(4,) int64 XYXY photo pixels: the last decoder pass's box (the last
        refinement's), or None when that pass had none or no pass ran."""
        box = self.prompts[-1].box_xyxy if self.prompts else None
        return None if box is None else np.rint(np.asarray(box, dtype=np.float64)).astype(np.int64)


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
        low_res_logits=out.low_res_logits.float().cpu().numpy(),
        notes=tuple(out.notes),
        prompts=tuple(out.prompts),
        part_count=part_count,
        part_scores=part_scores,
        object_score=out.object_score,
    )
