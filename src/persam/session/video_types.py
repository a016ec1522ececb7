"""The video protocol's settings and the values a video session passes around (see ``persam.session.video``).

Coordinates: photo pixels, (x, y) points, XYXY boxes. Label maps are (H, W) uint8, 0 = background, any
other value = object id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from persam.errors import OptionsError
from persam.method.decoder import Prompt
from persam.method.prior import Box
from persam.method.settings import FitSettings

#: The reference's video code draws the mask as 215 (not 128) before SAM's normalisation.
VIDEO_CELL_THRESHOLD = 123.675 / 215
#: Pixels added on each side of the previous frame's box.
BOX_MARGIN = 10


def _default_fit() -> FitSettings:
    return FitSettings(steps=800, lr=4e-4, eps=1e-4)


@dataclass(frozen=True)
class VideoSettings:
    """The video protocol's knobs; the defaults are the reference's.

    Attributes:
        top_k: similarity points per object; None = 2 (PerSAM) or 1 (PerSAM-F).
        box_margin: pixels added on each side of the previous frame's box.
        cell_threshold: fraction of a feature cell the first-frame mask must cover.
        fit: PerSAM-F's fit on frame 0 (reference: 800 AdamW steps, lr 4e-4, eps 1e-4, cosine).
        detect_absent: declare an object absent on frames where its best
            similarity is below its presence threshold (off: the reference).
        presence_threshold: one threshold for every object instead of the
            calibrated ones (implies ``detect_absent``).
    """

    top_k: int | None = None
    box_margin: int = BOX_MARGIN
    cell_threshold: float = VIDEO_CELL_THRESHOLD
    fit: FitSettings = field(default_factory=_default_fit)
    detect_absent: bool = False
    presence_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise OptionsError(f"top_k must be at least 1, got {self.top_k}")
        if self.box_margin < 0:
            raise OptionsError(f"box_margin must be >= 0, got {self.box_margin}")

    def points(self, finetune: bool) -> int:
        """Similarity points per object for the chosen method."""
        return self.top_k if self.top_k is not None else (1 if finetune else 2)


class VideoFrame(NamedTuple):
    """One segmented frame (unpacks as ``index, labels, scores``).

    Attributes:
        index: frame number, 0 = the first frame.
        labels: (H, W) uint8 label map, 0 = background, else object id.
        scores: object id -> predicted IoU of its final mask; 0.0 when the
            object has no pixel in ``labels``; 1.0 for every object in frame 0.
    """

    index: int
    labels: np.ndarray
    scores: dict[int, float]


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on one frame (photo pixels).

    Attributes:
        points_xy: (N, 2) int64 (x, y) points: the top-k similarity pixels, then the box centre.
        labels: (N,) int64, all 1 (foreground).
        box_xyxy: the enlarged previous box, or None while the object is absent.
    """

    points_xy: torch.Tensor
    labels: torch.Tensor
    box_xyxy: Box | None

    def to_prompt(self, box: Box | None, mask_logits: torch.Tensor | None = None) -> Prompt:
        """The decoder prompt with these points, ``box`` and optional (4h, 4w) mask logits."""
        return Prompt(
            points_xy=self.points_xy.float(),
            labels=self.labels,
            box_xyxy=None if box is None else torch.tensor(box, dtype=torch.float32),
            mask_logits=mask_logits,
        )


@dataclass(frozen=True)
class FramePrediction:
    """What ``VideoSession.predict`` found on one encoded frame.

    Attributes:
        labels: (H, W) uint8 merged label map.
        scores: object id -> predicted IoU (0.0 when absent from ``labels``).
        boxes: object id -> tight XYXY box in ``labels`` (None when absent).
        prompts: object id -> the prompt it was segmented with (present objects only).
    """

    labels: np.ndarray
    scores: dict[int, float]
    boxes: dict[int, Box | None]
    prompts: dict[int, ObjectPrompt]
