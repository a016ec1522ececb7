"""Training-free PerSAM (sections 3.1-3.4 of the paper), on one encoded image or several at once.

All prompts are in photo pixels; all masks stay low-resolution logits
(4h, 4w) until the caller upsamples the final one once. Several photos run
as one decoder call per stage (guided first pass, refinements 1 and 2) over
all their prompts (``persam.method.decoder.decode_many``); one photo is the
batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from persam.backends.base import Backend, EncodedImage
from persam.method.decoder import Guidance, Prompt, PromptRecord, decode_many
from persam.method.prior import location_prior, positive_point
from persam.method.refine import MethodOutput, refine
from persam.method.settings import PersamSettings
from persam.method.target import TargetFeatures, attention_guidance, similarity


def _first_prompt(
    encoded: EncodedImage, target: TargetFeatures, settings: PersamSettings, sim: torch.Tensor
) -> tuple[Prompt, Guidance | None]:
    """One photo's location prior (sections 3.1-3.2) and decoder guidance (3.3)."""
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
    return Prompt(points_xy=points.float(), labels=labels), guidance if guidance.active else None


def segment_persam_photos(
    backend: Backend,
    encoded: Sequence[EncodedImage],
    target: TargetFeatures,
    settings: PersamSettings,
    sims: Sequence[torch.Tensor | None] | None = None,
) -> list[MethodOutput]:
    """PerSAM on several photos at once: location priors, one guided first pass, the refinement cascade.

    Args:
        backend: the frozen model.
        encoded: the photos' embeddings.
        target: pooled reference features.
        settings: which components run.
        sims: each photo's (h, w) similarity map to use instead of the concept's own (e.g. with found
            instances suppressed); None (or a None entry) computes it.

    Returns:
        One output per photo, in order; each equals ``segment_persam`` on that photo alone up to float
        rounding.
    """
    images = list(encoded)
    given = list(sims) if sims is not None else [None] * len(images)
    sims = [similarity(e, target.direction("mean")) if s is None else s for e, s in zip(images, given)]
    firsts = [_first_prompt(e, target, settings, s) for e, s in zip(images, sims)]
    prompts = [p for p, _ in firsts]
    outs = decode_many(backend, images, prompts, multimask=False, guidance=[g for _, g in firsts])
    starts = [
        MethodOutput(
            first.low_res_logits[0],
            float(first.iou[0]),
            prompt.points_xy.to(torch.int64),
            prompt.labels,
            prompts=[PromptRecord.of(prompt)],
            object_score=first.object_score,
        )
        for prompt, first in zip(prompts, outs)
    ]
    if not settings.refinement:
        return starts
    return refine(backend, images, starts, [None] * len(starts), box_first=False)


def segment_persam(
    backend: Backend,
    encoded: EncodedImage,
    target: TargetFeatures,
    settings: PersamSettings,
    sim: torch.Tensor | None = None,
) -> MethodOutput:
    """PerSAM on one image: location prior, guided first pass, refinement (``segment_persam_photos`` of one).

    Args:
        backend: the frozen model.
        encoded: the target image's embedding.
        target: pooled reference features.
        settings: which components run.
        sim: (h, w) similarity map to use instead of the concept's own (e.g.
            with found instances suppressed); None computes it.
    """
    return segment_persam_photos(backend, [encoded], target, settings, [sim])[0]
