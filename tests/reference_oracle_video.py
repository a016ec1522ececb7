"""Test oracle: the authors' DAVIS video loop (PerSAM and PerSAM-F), re-derived for testing.

Like ``reference_oracle`` (whose predictor view, similarity maps and fit it
reuses), this restates the reference's computation on the official modules
and imports nothing from ``persam``:

* frame 0: per object, the first-frame mask drawn as red 215 goes through
  SAM's pixel normalisation and is sampled on the grid (a cell counts when
  the normalised red value is > 0, i.e. above 123.675 / 215); the target is
  ``(max + mean) / 2`` of the selected features, L2-normalised;
* later frames, per object: the top-k pixels of the full-resolution
  similarity map (``topk``: k = 2 for PerSAM, 1 for PerSAM-F), the object's
  tight box in the previous frame's label map enlarged by 10 px (low corner
  clipped at 0, high corner at the width / height) and that box's centre,
  all positive;
* PerSAM: points + box, multi-mask; the largest of the three masks (pixel
  count: the reference's uint8 cast of the counts is one of its faults, not
  copied); refinement 1 with points + its low-res logits, refinement 2 with
  points + the box of that mask + its logits (best predicted IoU each);
* PerSAM-F: the two weights fitted on frame 0 with frame 0's own prompt
  (800 AdamW steps, lr 4e-4, eps 1e-4, cosine) against the object's mask;
  later: the weighted sum of the three full-resolution logits gives the mask
  (the best-scored mask when empty), its box drives refinement 1 (points +
  box + weighted low-res logits), then refinement 2 as PerSAM;
* objects merged by arg-max of their full-resolution logits against a zero
  background.

The oracle works one frame at a time from a given previous label map, so a
test can compare each frame on its own. Where the reference would crash or
re-index its boxes (an object without pixels in the previous map), it raises
``ReferenceCrash``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reference_oracle import (
    OracleImage,
    ReferenceCrash,
    fit_mask_weights,
    reference_cells,
    similarity_map,
    tight_box,
)

VIDEO_MASK_RED = 215
BOX_MARGIN = 10


def top_points(sim: torch.Tensor, k: int) -> np.ndarray:
    """(k, 2) (x, y) of the ``topk`` pixels of a full-resolution map."""
    width = sim.shape[1]
    idx = sim.flatten().topk(k).indices.cpu().numpy()
    return np.stack([idx % width, idx // width], axis=1)


def kth_gap(sim: torch.Tensor, k: int) -> float:
    """Gap between the k-th and the (k+1)-th highest values: how close ``topk`` was to a tie."""
    values = sim.flatten().topk(k + 1).values
    return float(values[k - 1] - values[k])


def enlarged_box(mask: np.ndarray) -> np.ndarray:
    """The tight box of ``mask`` grown by ``BOX_MARGIN`` and clipped like the reference."""
    h, w = mask.shape
    x0, y0, x1, y1 = tight_box(mask)
    return np.array(
        [max(x0 - BOX_MARGIN, 0), max(y0 - BOX_MARGIN, 0), min(x1 + BOX_MARGIN, w), min(y1 + BOX_MARGIN, h)]
    )


@dataclass
class VideoObject:
    """One tracked object: direction (1, C) and, for PerSAM-F, (3, 1) weights."""

    direction: torch.Tensor
    weights: torch.Tensor | None = None


@dataclass
class FrameResult:
    """labels: (H, W) uint8; points: object id -> (N, 2) prompt points; gaps: id -> top-k tie gap."""

    labels: np.ndarray
    points: dict[int, np.ndarray] = field(default_factory=dict)
    gaps: dict[int, float] = field(default_factory=dict)


def first_frame(sam, frame: np.ndarray, labels: np.ndarray, finetune: bool) -> dict[int, VideoObject]:
    """Each object's target (and PerSAM-F weights) from the first frame and its label map."""
    objects = {}
    for oid in [int(v) for v in np.unique(labels) if v != 0]:
        mask = labels == oid
        drawn = np.zeros(frame.shape, dtype=np.uint8)
        drawn[mask, 0] = VIDEO_MASK_RED
        image = OracleImage(sam, frame, drawn)
        cells = reference_cells(image)
        if not bool(cells.any()):
            raise ReferenceCrash(f"object {oid} selects no cell")
        feats = image.features[0].permute(1, 2, 0)[cells]
        pooled = (feats.max(0).values / 2 + feats.mean(0) / 2)[None]
        obj = VideoObject(direction=pooled / pooled.norm(dim=-1, keepdim=True))
        if finetune:
            points, box = _prompt(image, obj, labels, oid, k=1)
            three = image.predict(points, np.ones(len(points)), box=box, multimask=True).high_res.flatten(1)
            gt = torch.as_tensor(mask, dtype=torch.float32, device=three.device).flatten()[None]
            obj.weights = fit_mask_weights(three, gt, steps=800, lr=4e-4)
        objects[oid] = obj
    return objects


def _prompt(
    image: OracleImage, obj: VideoObject, previous: np.ndarray, oid: int, k: int, points_xy: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    mask = previous == oid
    if not mask.any():
        raise ReferenceCrash(f"object {oid} has no pixel in the previous frame (the reference re-indexes its boxes)")
    box = enlarged_box(mask)
    top = top_points(similarity_map(image, obj.direction), k) if points_xy is None else np.asarray(points_xy)[:k]
    centre = np.array([[(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]])
    return np.concatenate([top, centre], axis=0), box


def segment_object(
    image: OracleImage, obj: VideoObject, previous: np.ndarray, oid: int, points_xy: np.ndarray | None = None
) -> tuple[torch.Tensor, np.ndarray, float]:
    """(H, W) final logits of one object, its prompt points, and the top-k tie gap of its map."""
    k = 1 if obj.weights is not None else 2
    sim = similarity_map(image, obj.direction)
    points, box = _prompt(image, obj, previous, oid, k, points_xy)
    labels = np.ones(len(points))
    first = image.predict(points, labels, box=box, multimask=True)
    if obj.weights is None:
        j = int(np.argmax(first.masks.reshape(3, -1).sum(1)))
        start_low = first.low_res[j : j + 1]
        step1 = image.predict(points, labels, mask_input=start_low, multimask=True)
    else:
        weighted_high = (first.high_res * obj.weights[:, :, None]).sum(0)
        mask = (weighted_high > 0).cpu().numpy()
        if not mask.any():
            mask = first.masks[int(np.argmax(first.scores))]
        weighted_low = (first.low_res * obj.weights.cpu().numpy()[..., None]).sum(0)
        step1 = image.predict(points, labels, box=tight_box(mask), mask_input=weighted_low[None], multimask=True)
    b1 = int(np.argmax(step1.scores))
    step2 = image.predict(
        points, labels, box=tight_box(step1.masks[b1]), mask_input=step1.low_res[b1 : b1 + 1], multimask=True
    )
    b2 = int(np.argmax(step2.scores))
    return step2.high_res[b2], points, kth_gap(sim, k)


def next_frame(
    sam,
    frame: np.ndarray,
    objects: dict[int, VideoObject],
    previous: np.ndarray,
    points: dict[int, np.ndarray] | None = None,
) -> FrameResult:
    """The merged label map of one later frame, from the previous frame's label map.

    ``points`` (object id -> top-k points) replaces an object's ``topk``
    points, to follow the reference after a different break of a tie.
    """
    image = OracleImage(sam, frame)
    result = FrameResult(labels=np.zeros(previous.shape, dtype=np.uint8))
    logits = []
    for oid, obj in objects.items():
        full, pts, gap = segment_object(image, obj, previous, oid, None if points is None else points.get(oid))
        logits.append(full)
        result.points[oid], result.gaps[oid] = pts, gap
    stacked = torch.cat([torch.zeros_like(logits[0])[None], torch.stack(logits)])
    ids = np.array([0, *objects], dtype=np.uint8)
    result.labels = ids[stacked.argmax(0).cpu().numpy()]
    return result
