"""Training-free PerSAM on one encoded image (sections 3.1-3.4 of the paper).

All prompts are in photo pixels; all masks stay low-resolution logits
(4h, 4w) until the caller upsamples the final one once.
"""

from __future__ import annotations

import torch

from persam.backends.base import Backend, EncodedImage
from persam.method.decoder import DecoderOutput, Guidance, Prompt, PromptRecord, decode
from persam.method.prior import location_prior, positive_point
from persam.method.refine import MethodOutput, refine
from persam.method.settings import PersamSettings
from persam.method.target import TargetFeatures, attention_guidance, similarity


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
        pts = [positive_point(sim, encoded.geometry)]
    points = torch.tensor(pts, dtype=torch.int64)
    labels = torch.tensor([1] + [0] * (len(pts) - 1), dtype=torch.int64)
    guidance = Guidance(
        attention_bias=attention_guidance(sim, encoded.geometry) if settings.guided_attention else None,
        target_embedding=target.mean if settings.semantic_prompt else None,
    )
    prompt = Prompt(points_xy=points.float(), labels=labels)
    first: DecoderOutput = decode(
        backend,
        encoded,
        prompt,
        multimask=False,
        guidance=guidance if (guidance.attention_bias is not None or guidance.target_embedding is not None) else None,
    )
    start = MethodOutput(
        first.low_res_logits[0],
        float(first.iou[0]),
        points,
        labels,
        prompts=[PromptRecord.of(prompt)],
        object_score=first.object_score,
    )
    if not settings.refinement:
        return start
    return refine(backend, encoded, [start], [None], box_first=False)[0]
