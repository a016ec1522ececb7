"""Running a backend's mask decoder, optionally with PerSAM's guidance.

Each decoder family has one runner (``persam.method.runner.DecoderRunner``):
``sam1_runner`` for segment-anything's decoder (SAM, MobileSAM, LiteMedSAM;
it alone may take the re-associated fast decoder, ``persam.method.factored``)
and ``sam2_runner`` for SAM 2.1. ``predict`` dispatches by ``Backend.family``;
the guidance itself (target-guided attention, target-semantic prompting,
PerSAM section 3.3) is one implementation shared by both families,
``persam.method.guided``.

``decode`` runs one prompt given in photo pixels; ``decode_many`` runs several
prompts on one image (the video protocol's objects, the part-aware prior's
candidates) or on several photos at once (one prompt per photo: an album's
photos decoded together, each PerSAM stage one call), batched by prompt layout.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from persam.backends.base import Backend, EncodedImage
from persam.errors import IncompatibleError
from persam.method.guided import Guidance, attention
from persam.method.runner import DecoderPass, DecoderRunner
from persam.method.sam1_runner import FIRST_BLOCK, PROJECT_FROM_BATCH, SAM1_RUNNER, guided_predict_masks
from persam.method.sam2_runner import SAM2_RUNNER

__all__ = [
    "FIRST_BLOCK",
    "PROJECT_FROM_BATCH",
    "DecoderOutput",
    "DecoderPass",
    "Guidance",
    "Prompt",
    "PromptRecord",
    "RUNNERS",
    "attention",
    "decode",
    "decode_many",
    "guided_predict_masks",
    "predict",
    "runner_for",
    "stack_images",
]

#: The decoder runner of each ``Backend.family``.
RUNNERS: dict[str, DecoderRunner] = {runner.family: runner for runner in (SAM1_RUNNER, SAM2_RUNNER)}


def runner_for(backend: Backend) -> DecoderRunner:
    """The decoder runner of ``backend``'s family; ValueError for a family without one."""
    runner = RUNNERS.get(backend.family)
    if runner is None:
        raise ValueError(f"no decoder runner for model family {backend.family!r} (known: {', '.join(RUNNERS)})")
    return runner


@dataclass(frozen=True)
class Prompt:
    """Prompts in photo pixel coordinates.

    Attributes:
        points_xy: (N, 2) float (x, y) pixels, or None.
        labels: (N,) int, 1 = foreground, 0 = background.
        box_xyxy: (4,) float XYXY pixels, or None.
        mask_logits: (4h, 4w) low-resolution logits from an earlier pass, or None.
    """

    points_xy: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    box_xyxy: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None


@dataclass(frozen=True)
class PromptRecord:
    """The prompts of one decoder pass, as plain numbers (for manifests: "why this mask?").

    Attributes:
        points_xy: [[x, y], ...] photo pixels.
        point_labels: [1 | 0, ...] (1 = foreground).
        box_xyxy: [x0, y0, x1, y1] photo pixels, or None.
        mask_prompt: whether the previous pass's logits were given as a mask prompt.
    """

    points_xy: tuple[tuple[float, float], ...]
    point_labels: tuple[int, ...]
    box_xyxy: tuple[float, float, float, float] | None
    mask_prompt: bool = False

    @classmethod
    def of(cls, prompt: Prompt) -> PromptRecord:
        def number(v: float) -> float:
            return int(v) if float(v).is_integer() else float(v)

        points = (
            ()
            if prompt.points_xy is None
            else tuple((number(x), number(y)) for x, y in prompt.points_xy.reshape(-1, 2).tolist())
        )
        labels = () if prompt.labels is None else tuple(int(v) for v in prompt.labels.reshape(-1).tolist())
        box = None if prompt.box_xyxy is None else tuple(number(v) for v in prompt.box_xyxy.reshape(-1).tolist())
        return cls(points, labels, box, prompt.mask_logits is not None)

    def to_dict(self) -> dict[str, object]:
        """``{"points_xy": [[x, y], ...], "point_labels": [...], "box_xyxy": [...] or None}``."""
        return {
            "points_xy": [list(p) for p in self.points_xy],
            "point_labels": list(self.point_labels),
            "box_xyxy": None if self.box_xyxy is None else list(self.box_xyxy),
        }


@dataclass(frozen=True)
class DecoderOutput:
    """Masks of one decoder pass.

    Attributes:
        low_res_logits: (K, 4h, 4w) float32 logits; K = 1 (single) or 3 (multi-mask).
        iou: (K,) float32 predicted IoU of each mask.
        object_score: SAM 2's object-score logit for this prompt (> 0: an object is
            there), or None (SAM 1 family, which has no such head).
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    object_score: float | None = None

    def best(self) -> tuple[torch.Tensor, float]:
        """(4h, 4w) logits of the mask with the highest predicted IoU, and that IoU."""
        k = int(torch.argmax(self.iou))
        return self.low_res_logits[k], float(self.iou[k])


def predict(
    backend: Backend,
    encoded: EncodedImage,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
    multimask: bool,
    guidance: Guidance | None = None,
    exact: bool = False,
    best_only: bool = False,
) -> DecoderPass:
    """The prompt encoder and mask decoder on a batch of prompts, in fp32, by the backend's family runner.

    Args:
        backend: the frozen model.
        encoded: the image (its (1, C, h, w) embedding; SAM 2 also its
            high-resolution features; the SAM 1 fast path keeps its per-image
            products with it, ``EncodedImage.derived``), or B photos stacked
            (``stack_images``: (B, C, h, w), image i for prompt i).
        points: (B, N, 2) (x, y) in encoder-frame pixels and (B, N) int labels, or None.
        boxes: (B, 4) XYXY in encoder-frame pixels, or None.
        masks: (B, 1, 4h, 4w) mask logits, or None.
        multimask: the three multi-mask outputs (tokens 1-3) instead of one mask.
        guidance: PerSAM's decoder additions, or None.
        exact: run the official modules in the official order (SAM 1 family:
            instead of the re-associated decoder; SAM 2 always does).
        best_only: with ``multimask``, keep each prompt's mask with the highest predicted IoU
            (``DecoderPass.best``; the SAM 1 fast path then upscales that one alone).

    Returns:
        ``DecoderPass``: logits (B, K, 4h, 4w), iou (B, K), K = 3 (multimask, not ``best_only``)
        or 1, and SAM 2's (B,) object scores.
    """
    return runner_for(backend).predict(
        backend, encoded, points, boxes, masks, multimask, guidance or Guidance(), exact, best_only and multimask
    )


def decode(
    backend: Backend,
    encoded: EncodedImage,
    prompt: Prompt,
    multimask: bool,
    guidance: Guidance | None = None,
    exact: bool = False,
) -> DecoderOutput:
    """One pass of the prompt encoder and mask decoder on an encoded image.

    Args:
        backend: the frozen model.
        encoded: the image's embedding and geometry.
        prompt: points / box / mask logits in photo pixels.
        multimask: return the three multi-mask outputs (tokens 1-3) instead of one mask.
        guidance: PerSAM's decoder additions; None runs the plain decoder.
        exact: official submodules in official order (see ``predict``).
    """
    return decode_many(backend, encoded, [prompt], multimask, guidance, exact)[0]


def _layout(prompt: Prompt) -> tuple[int, bool, bool]:
    n_points = 0 if prompt.points_xy is None else int(prompt.points_xy.shape[0])
    return n_points, prompt.box_xyxy is not None, prompt.mask_logits is not None


def _per_prompt(value, n: int, what: str) -> list:
    """``value`` once per prompt: a sequence of ``n`` values as it is, a single value repeated."""
    if isinstance(value, Sequence):
        if len(value) != n:
            raise ValueError(f"{len(value)} {what} for {n} prompts")
        return list(value)
    return [value] * n


def stack_images(images: Sequence[EncodedImage]) -> EncodedImage:
    """Several photos' images as one batch for ``predict``: embedding (B, C, h, w), SAM 2's skips
    (B, C/8, 4h, 4w) and (B, C/4, 2h, 2w), image i for prompt i. Its geometry is the first photo's
    (``predict`` takes encoder-frame prompts and uses none); never hand it to the method layer."""
    first = images[0]
    high_res = None
    if first.high_res_features is not None:
        if any(e.high_res_features is None for e in images):
            raise IncompatibleError("photos encoded by different model families cannot be decoded together")
        high_res = tuple(torch.cat(level) for level in zip(*(e.high_res_features for e in images)))
    return EncodedImage(torch.cat([e.embedding for e in images]), first.geometry, high_res)


def _guidance(given: list[Guidance | None], stacked: bool) -> Guidance | None:
    """One batch's guidance: one target embedding (the concept's) and, for stacked photos, their biases
    as (B, N) rows."""
    first = given[0]
    if first is None or not first.active:
        return None
    bias = first.attention_bias
    if bias is not None and stacked:
        bias = torch.stack([g.attention_bias.reshape(-1) for g in given])
    return Guidance(attention_bias=bias, target_embedding=first.target_embedding)


def _group_key(prompt: Prompt, guidance: Guidance | None, image: EncodedImage, one_image: bool) -> tuple:
    """Prompts decoded in one call share their layout, the kind of guidance and its target embedding
    (and, for one image with per-prompt biases, the bias itself)."""
    g = guidance if guidance is not None and guidance.active else Guidance()
    bias = None if g.attention_bias is None else (id(g.attention_bias) if one_image else True)
    target = None if g.target_embedding is None else id(g.target_embedding)
    return _layout(prompt), bias, target, image.embedding.shape[1:]


@torch.inference_mode()
def decode_many(
    backend: Backend,
    encoded: EncodedImage | Sequence[EncodedImage],
    prompts: Sequence[Prompt],
    multimask: bool,
    guidance: Guidance | Sequence[Guidance | None] | None = None,
    exact: bool = False,
    best_only: bool = False,
) -> list[DecoderOutput]:
    """The prompt encoder and mask decoder on several prompts, on one image or on several photos at once.

    Prompts of the same layout (number of points, box or not, mask logits or
    not) and kind of guidance share one batched call, also when they are on
    different photos (each prompt then decoded on its own photo's embedding,
    ``stack_images``); each result equals the single-prompt pass on its photo
    up to float rounding (masks IoU >= 0.999, scores within 1e-4: tests).

    Args:
        backend: the frozen model.
        encoded: the image's embedding and geometry, or one image per prompt.
        prompts: points / box / mask logits in each image's photo pixels (see ``Prompt``).
        multimask: SAM's three masks (tokens 1-3) instead of token 0.
        guidance: PerSAM's decoder additions for every prompt, or one per prompt
            (a photo's own attention bias; one concept's target embedding), or None.
        exact: official submodules in official order (see ``predict``).
        best_only: with ``multimask``, each prompt's mask with the highest predicted IoU only (K = 1;
            the re-associated decoder then upscales that one alone): what ``DecoderOutput.best`` picks.

    Returns:
        One ``DecoderOutput`` per prompt, in order: (K, 4h, 4w) logits and (K,) IoU.
    """
    n = len(prompts)
    images = _per_prompt(encoded, n, "images")
    guides = _per_prompt(guidance, n, "guidances")
    one_image = len({id(e) for e in images}) <= 1
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        groups[_group_key(prompt, guides[i], images[i], one_image)].append(i)
    dev = backend.device
    outputs: list[DecoderOutput | None] = [None] * n
    for ((n_points, has_box, has_mask), *_), idx in groups.items():
        batch = [prompts[i] for i in idx]
        shown = [images[i] for i in idx]
        points = None
        if n_points:
            coords = torch.stack([e.geometry.to_model_xy(p.points_xy.to(dev).float()) for e, p in zip(shown, batch)])
            labels = torch.stack([p.labels.to(dev, torch.int).view(-1) for p in batch])
            points = (coords, labels)
        boxes = None
        if has_box:
            boxes = torch.stack(
                [e.geometry.to_model_xy(p.box_xyxy.to(dev).float().view(2, 2)).view(4) for e, p in zip(shown, batch)]
            )
        masks = None
        if has_mask:
            masks = torch.stack(
                [p.mask_logits.to(dev, torch.float32).view(1, *e.geometry.low_res_hw) for e, p in zip(shown, batch)]
            )
        image = shown[0] if one_image else stack_images(shown)
        guide = _guidance([guides[i] for i in idx], not one_image)
        out = predict(backend, image, points, boxes, masks, multimask, guide, exact, best_only)
        for j, i in enumerate(idx):
            score = None if out.object_score is None else float(out.object_score[j])
            outputs[i] = DecoderOutput(low_res_logits=out.logits[j].float(), iou=out.iou[j].float(), object_score=score)
    return [o for o in outputs if o is not None]
