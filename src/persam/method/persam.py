"""Training-free PerSAM on one encoded image (sections 3.1-3.4 of the paper).

All prompts are in photo pixels; all masks stay low-resolution logits
(4h, 4w) until the caller upsamples the final one once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from persam.backends.base import Backend, EncodedImage
from persam.method.decoder import DecoderOutput, Guidance, Prompt, decode
from persam.method.resample import logits_operator, similarity_operator
from persam.method.settings import PersamSettings
from persam.method.target import TargetFeatures, attention_guidance, location_prior, similarity


@dataclass
class MethodOutput:
    """The final mask of one image, before upsampling.

    Attributes:
        low_res_logits: (4h, 4w) float32 logits of the chosen mask.
        score: the decoder's predicted IoU for it.
        points_xy: (N, 2) int (x, y) prompt points in photo pixels.
        point_labels: (N,) int, 1 = foreground, 0 = background.
        box_xyxy: the last box prompt (XYXY photo pixels), or None.
        notes: what happened off the usual path (e.g. an empty stage kept).
    """

    low_res_logits: torch.Tensor
    score: float
    points_xy: torch.Tensor
    point_labels: torch.Tensor
    box_xyxy: tuple[int, int, int, int] | None = None
    notes: list[str] = field(default_factory=list)


def refine(
    backend: Backend,
    encoded: EncodedImage,
    points: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    score: float,
    box: tuple[int, int, int, int] | None,
    with_box_first: bool,
) -> MethodOutput:
    """Cascaded post-refinement: two multi-mask passes, best predicted IoU each.

    Pass 1 uses the points, ``logits`` as mask prompt and, if
    ``with_box_first``, ``box``. Pass 2 adds the box of pass 1's mask. A stage
    whose mask is empty (no box) keeps the previous stage's result, recorded
    in ``notes`` (the reference crashes there).
    """
    op = logits_operator(encoded.geometry)
    out = MethodOutput(logits, score, points, labels, box)
    for stage in (1, 2):
        use_box = box if (stage == 2 or with_box_first) else None
        if (stage == 2 or with_box_first) and box is None:
            out.notes.append(f"refinement {stage} skipped: the previous mask is empty")
            return out
        prompt = Prompt(
            points_xy=points.float(),
            labels=labels,
            box_xyxy=None if use_box is None else torch.tensor(use_box, dtype=torch.float32),
            mask_logits=out.low_res_logits,
        )
        new_logits, new_score = decode(backend, encoded, prompt, multimask=True).best()
        out = MethodOutput(new_logits, new_score, points, labels, use_box, out.notes)
        if stage == 1:  # the box prompt of stage 2
            box = op.positive_box(new_logits)
    return out


def segment_persam(
    backend: Backend,
    encoded: EncodedImage,
    target: TargetFeatures,
    settings: PersamSettings,
    sim: torch.Tensor | None = None,
) -> MethodOutput:
    """PerSAM on one image: location prior, guided first pass, refinement.

    Args:
        backend: the frozen model.
        encoded: the target image's embedding.
        target: pooled reference features.
        settings: which components run.
        sim: (h, w) similarity map to use instead of the concept's own (e.g.
            with found instances suppressed); None computes it.
    """
    if sim is None:
        sim = similarity(encoded, target.direction("mean"))
    if settings.negative_point:
        prior = location_prior(sim, encoded.geometry)
        pts = [prior.positive_xy, prior.negative_xy]
    else:
        pts = [similarity_operator(encoded.geometry).argmax(sim)]
    points = torch.tensor(pts, dtype=torch.int64)
    labels = torch.tensor([1] + [0] * (len(pts) - 1), dtype=torch.int64)
    guidance = Guidance(
        attention_bias=attention_guidance(sim, encoded.geometry) if settings.guided_attention else None,
        target_embedding=target.mean if settings.semantic_prompt else None,
    )
    first: DecoderOutput = decode(
        backend,
        encoded,
        Prompt(points_xy=points.float(), labels=labels),
        multimask=False,
        guidance=guidance if (guidance.attention_bias is not None or guidance.target_embedding is not None) else None,
    )
    logits, score = first.low_res_logits[0], float(first.iou[0])
    if not settings.refinement:
        return MethodOutput(logits, score, points, labels)
    return refine(backend, encoded, points, labels, logits, score, box=None, with_box_first=False)
