"""PerSAM-F on an encoded image or several at once (section 3.5): prompt, weighted three-scale mask, refinement.

The two weights are fitted by ``persam.method.fit`` on the decoder's three
maps of the reference(s) (``fit_problems`` runs the decoder for them, one
batched call for several objects on one image). On a new image the decoder's
three masks for the same kind of prompt are summed with the weights
(``w0 M1 + w1 M2 + w2 M3``); that mask, its box and its logits start the
refinement cascade (``persam.method.refine``).

PerSAM-F's prompt has no negative point, and it uses neither target-guided
attention nor target-semantic prompting (``check_settings``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from persam.backends.base import Backend, EncodedImage
from persam.errors import OptionsError
from persam.method.decoder import DecoderOutput, Prompt, PromptRecord, decode_many
from persam.method.fit import FitProblem, auto_block, pool_problem
from persam.method.prior import Box, positive_point
from persam.method.refine import MethodOutput, refine
from persam.method.resample import logits_operator, upscale_logits
from persam.method.settings import PersamSettings
from persam.method.target import TargetFeatures, similarity

#: Components of PerSAM that PerSAM-F does not have (its prompt is one positive point).
NOT_IN_PERSAM_F = ("guided-attention", "semantic-prompt", "negative-point")


def check_settings(settings: PersamSettings) -> None:
    """Refuse switches that mean nothing for PerSAM-F (only ``refinement`` applies).

    Raises:
        ValueError: a component PerSAM-F does not use was switched off.
    """
    moot = [c for c in settings.disabled() if c in NOT_IN_PERSAM_F]
    if moot:
        raise OptionsError(
            f"PerSAM-F does not use {', '.join(moot)} (its prompt is one positive point, without guidance); "
            "drop --without " + " --without ".join(moot) + " or drop --finetune"
        )


def point_prompt(encoded: EncodedImage, target: TargetFeatures, sim: torch.Tensor | None = None) -> Prompt:
    """PerSAM-F's prompt: the arg-max of the (max+mean)/2 similarity (or of ``sim``), label 1."""
    if sim is None:
        sim = similarity(encoded, target.direction("maxmean"))
    xy = positive_point(sim, encoded.geometry)
    return Prompt(points_xy=torch.tensor([xy], dtype=torch.float32), labels=torch.tensor([1], dtype=torch.int64))


def fit_problems(
    backend: Backend, encoded: EncodedImage, prompts: Sequence[Prompt], masks: Sequence[torch.Tensor], block: int = 0
) -> list[FitProblem]:
    """Each object's fit problem on one image: the frozen decoder's three maps for its prompt, pooled.

    Args:
        prompts: one prompt per object (photo pixels), decoded in one batched call.
        masks: (H, W) bool mask of each object.
        block: pooling block side; 0 picks it from the image size (``auto_block``).
    """
    block = block or auto_block(encoded.geometry.original_hw)
    outs = decode_many(backend, encoded, list(prompts), multimask=True)
    return [
        pool_problem(upscale_logits(out.low_res_logits, encoded.geometry).cpu(), mask.cpu(), block)
        for out, mask in zip(outs, masks)
    ]


def weighted_start(
    out: DecoderOutput,
    weights: torch.Tensor,
    prompt: Prompt,
    encoded: EncodedImage,
    prompts: Sequence[PromptRecord] = (),
) -> tuple[MethodOutput, Box | None]:
    """The weighted three-scale mask (before refinement) and the box that starts refinement 1.

    If the weighted mask is empty, the box comes from the best-scored of the
    three masks (the reference's video code; its photo code crashes there)
    and ``notes`` says so; the mask prompt stays the weighted logits.

    Args:
        out: the decoder's three masks for ``prompt``.
        weights: (3,) mask weights.
    """
    w = weights.to(out.low_res_logits)
    weighted = torch.einsum("k,khw->hw", w, out.low_res_logits)
    score = float((w * out.iou).sum())
    op = logits_operator(encoded.geometry)
    box = op.positive_box(weighted)
    notes = []
    if box is None:
        box = op.positive_box(out.best()[0])
        notes.append("weighted mask empty: refinement starts from the box of the best-scored of the three masks")
    start = MethodOutput(
        weighted,
        score,
        prompt.points_xy.to(torch.int64),
        prompt.labels,
        None,
        notes,
        list(prompts) or [PromptRecord.of(prompt)],
        out.object_score,
    )
    return start, box


def segment_persam_f_photos(
    backend: Backend,
    encoded: Sequence[EncodedImage],
    target: TargetFeatures,
    weights: torch.Tensor,
    settings: PersamSettings | None = None,
    sims: Sequence[torch.Tensor | None] | None = None,
) -> list[MethodOutput]:
    """PerSAM-F on several photos at once: one three-scale decoder call, the weighted masks, the cascade.

    Args:
        settings: only ``refinement`` applies (``check_settings``); without
            it the result is the weighted mask itself (its logits > 0).
        sims: each photo's (h, w) similarity map to take the point from instead of the concept's own
            (None, or a None entry: the concept's).

    Returns:
        One output per photo, in order; each equals ``segment_persam_f`` on that photo alone up to float
        rounding.
    """
    settings = settings or PersamSettings()
    check_settings(settings)
    images = list(encoded)
    given = list(sims) if sims is not None else [None] * len(images)
    prompts = [point_prompt(e, target, s) for e, s in zip(images, given)]
    outs = decode_many(backend, images, prompts, multimask=True)
    started = [weighted_start(out, weights, prompt, e) for out, prompt, e in zip(outs, prompts, images)]
    starts = [start for start, _ in started]
    if not settings.refinement:
        return starts
    return refine(backend, images, starts, [box for _, box in started], box_first=True)


def segment_persam_f(
    backend: Backend,
    encoded: EncodedImage,
    target: TargetFeatures,
    weights: torch.Tensor,
    settings: PersamSettings | None = None,
    sim: torch.Tensor | None = None,
) -> MethodOutput:
    """PerSAM-F on one image (``segment_persam_f_photos`` of one): weighted three-scale mask, then (unless
    switched off) the refinement cascade.

    Args:
        settings: only ``refinement`` applies (``check_settings``); without
            it the result is the weighted mask itself (its logits > 0).
        sim: (h, w) similarity map to take the point from instead of the concept's own.
    """
    return segment_persam_f_photos(backend, [encoded], target, weights, settings, [sim])[0]
