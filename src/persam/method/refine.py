"""Cascaded post-refinement (PerSAM section 3.4), batched over prompts on one image or over photos.

Every path ends with it: PerSAM and PerSAM-F on a photo (one prompt) or on
several photos at once (one prompt each, one decoder call per pass), the
video protocol (one prompt per object). Two multi-mask passes, each keeping
the mask with the highest predicted IoU:

* pass 1: the points, the start's low-res logits as mask prompt and, when
  ``box_first`` (PerSAM-F), the start's box;
* pass 2: the points, the tight box of pass 1's mask, its logits.

A pass that needs a box whose mask is empty (no box) keeps the previous
stage's result and says so in ``notes`` (the reference crashes there).
All prompts in photo pixels; masks stay (4h, 4w) low-res logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from persam.backends.base import Backend, EncodedImage
from persam.method.decoder import Prompt, PromptRecord, decode_many
from persam.method.prior import Box
from persam.method.resample import logits_operator


@dataclass
class MethodOutput:
    """One object's mask on one image, before upsampling.

    Attributes:
        low_res_logits: (4h, 4w) float32 logits of the chosen mask.
        score: the decoder's predicted IoU for it.
        points_xy: (N, 2) int (x, y) prompt points in photo pixels.
        point_labels: (N,) int, 1 = foreground, 0 = background.
        box_xyxy: the last box prompt (XYXY photo pixels), or None.
        notes: what happened off the usual path (e.g. an empty stage kept).
        prompts: the prompts of every decoder pass that made this mask, first pass first.
        object_score: SAM 2's object-score logit of the pass that made this mask
            (> 0: an object is there), or None (SAM 1 family).
    """

    low_res_logits: torch.Tensor
    score: float
    points_xy: torch.Tensor
    point_labels: torch.Tensor
    box_xyxy: Box | None = None
    notes: list[str] = field(default_factory=list)
    prompts: list[PromptRecord] = field(default_factory=list)
    object_score: float | None = None


def _prompt(out: MethodOutput, box: Box | None) -> Prompt:
    return Prompt(
        points_xy=out.points_xy.float(),
        labels=out.point_labels,
        box_xyxy=None if box is None else torch.tensor(box, dtype=torch.float32),
        mask_logits=out.low_res_logits,
    )


def refine(
    backend: Backend,
    encoded: EncodedImage | Sequence[EncodedImage],
    starts: Sequence[MethodOutput],
    boxes: Sequence[Box | None],
    box_first: bool,
) -> list[MethodOutput]:
    """The two refinement passes for every start at once (one decoder call per pass and prompt layout).

    Args:
        backend: the frozen model.
        encoded: the image of every start, or one image per start (photos refined together).
        starts: each object's mask before refinement, with its points and the prompts so far.
        boxes: each start's box for pass 1 (used only with ``box_first``).
        box_first: pass 1 carries a box (PerSAM-F) or not (PerSAM).

    Returns:
        The refined outputs, in the order of ``starts``.
    """
    images = list(encoded) if isinstance(encoded, Sequence) else [encoded] * len(starts)
    ops = [logits_operator(e.geometry) for e in images]
    current = [
        MethodOutput(
            s.low_res_logits,
            s.score,
            s.points_xy,
            s.point_labels,
            s.box_xyxy,
            list(s.notes),
            list(s.prompts),
            s.object_score,
        )
        for s in starts
    ]
    box = list(boxes) if box_first else [None] * len(current)
    stopped: set[int] = set()
    for stage in (1, 2):
        with_box = stage == 2 or box_first
        active = []
        for i, out in enumerate(current):
            if i in stopped:
                continue
            if with_box and box[i] is None:  # the box of an empty mask: keep this stage, stop here
                out.notes.append(f"refinement {stage} skipped: the previous mask is empty")
                stopped.add(i)
                continue
            active.append(i)
        prompts = [_prompt(current[i], box[i] if with_box else None) for i in active]
        shown = [images[i] for i in active] if isinstance(encoded, Sequence) else encoded
        for i, prompt, dec in zip(
            active, prompts, decode_many(backend, shown, prompts, multimask=True, best_only=True)
        ):
            logits, score = dec.best()
            used = box[i] if with_box else None
            current[i] = MethodOutput(
                logits,
                score,
                current[i].points_xy,
                current[i].point_labels,
                used,
                current[i].notes,
                current[i].prompts + [PromptRecord.of(prompt)],
                dec.object_score,
            )
            box[i] = ops[i].positive_box(logits)
    return current
