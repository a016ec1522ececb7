"""Test oracle: the authors' PerSAM / PerSAM-F computation, re-derived for testing.

This module re-derives, step by step, what the reference implementation of
"Personalize Segment Anything Model with One Shot" (Zhang et al., 2023;
github.com/ZrrSkywalker/Personalize-SAM: ``persam.py``, ``persam_f.py``,
``per_segment_anything/predictor.py``, ``.../modeling/transformer.py``,
``.../modeling/mask_decoder.py``, ``.../modeling/sam.py``) computes, so that
tests can compare the ``persam`` package against it. It is written
independently of ``persam`` (it imports nothing from it) and is not used by
the package.

It follows the reference literally, on purpose, including its costs:

* images go through the official ``ResizeLongestSide`` and the model's own
  ``preprocess``; the reference mask (the palette PNG rendered to RGB, object
  = (128, 0, 0)) is pushed through the same path, i.e. through SAM's pixel
  normalisation, sampled to the feature grid with ``F.interpolate`` and its
  red channel compared with 0;
* similarity maps are built at full resolution (``F.interpolate`` x4, then
  the model's ``postprocess_masks``) and points are picked with ``topk``;
* the target-guided attention bias is ``sigmoid`` of the standardised full
  map resized back to the grid (the reference hard-codes 64 x 64, the grid of
  a 1024-px encoder; the grid of the model at hand is used here so that a
  256-px test model works too);
* the decoder is the OFFICIAL ``segment_anything`` / ``mobile_sam`` module,
  called through its own ``forward``; for PerSAM's guided first step its
  two-way transformer's ``forward`` and the token-to-image attentions'
  ``forward`` are temporarily replaced by re-statements of the reference's
  modified ones (target embedding added in place to the token tensor that is
  also the query positional embedding, plus once more to the final
  attention's query; ``softmax(softmax(A) + G)`` in the blocks' token-to-image
  cross-attention);
* PerSAM-F is fitted with autograd, ``torch.optim.AdamW(lr=1e-3, eps=1e-4)``
  and ``CosineAnnealingLR(steps)`` over the full-resolution logits, with the
  decoder re-run at every step like the reference (optionally run once: it
  is frozen, so its output is the same at every step).

Where the reference would crash (a box of an empty mask), the oracle raises
``ReferenceCrash``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn


class ReferenceCrash(RuntimeError):
    """The reference code would fail here (e.g. the box of an empty mask)."""


# --------------------------------------------------------------------------
# The decoder with the reference's PerSAM modifications, by patching forwards
# --------------------------------------------------------------------------


def _attention_with_bias(module: nn.Module, bias: torch.Tensor):
    """A replacement ``forward`` for an official ``Attention`` instance.

    Same projections, heads and scaling as the official forward; after the
    softmax the bias is added and a second softmax taken, as in the
    reference's ``Attention.forward(..., attn_sim)``.
    """

    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads = module.num_heads
        qh = module._separate_heads(module.q_proj(q), heads)
        kh = module._separate_heads(module.k_proj(k), heads)
        vh = module._separate_heads(module.v_proj(v), heads)
        scores = (qh @ kh.permute(0, 1, 3, 2)) / math.sqrt(qh.shape[-1])
        weights = torch.softmax(scores, dim=-1)
        weights = torch.softmax(weights + bias, dim=-1)  # bias (1, 1, 1, h*w) broadcasts over heads/tokens
        return module.out_proj(module._recombine_heads(weights @ vh))

    return forward


def _transformer_with_target(transformer: nn.Module, target: torch.Tensor | None):
    """A replacement ``forward`` for an official ``TwoWayTransformer`` instance.

    Restates the reference's modified forward. The reference starts with
    ``queries = point_embedding`` and does ``queries += target_embedding``
    before each block: before the first block ``queries`` IS the token tensor
    passed as ``point_embedding``, so that in-place add changes the query
    positional embedding used by every block and by the final attention;
    from the second block on ``queries`` is the previous block's output (a new
    tensor), so the add only shifts the queries. Before the final
    token-to-image attention it adds the target once more to
    ``queries + point_embedding``. The blocks themselves run their official
    forward (their token-to-image attention may be patched for the bias).
    """

    def forward(image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor):
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for index, block in enumerate(transformer.layers):
            if target is not None:
                if index == 0:
                    point_embedding.add_(target)  # in place: also the query PE from now on
                    queries = point_embedding
                else:
                    queries = queries + target
            queries, keys = block(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)
        final_q = queries + point_embedding
        if target is not None:
            final_q = final_q + target
        attended = transformer.final_attn_token_to_image(q=final_q, k=keys + key_pe, v=keys)
        return transformer.norm_final_attn(queries + attended), keys

    return forward


@contextmanager
def reference_decoder(
    decoder: nn.Module, attn_sim: torch.Tensor | None, target_embedding: torch.Tensor | None
) -> Iterator[None]:
    """Within the block, ``decoder`` (official MaskDecoder) behaves like the reference's.

    With both arguments None nothing is patched (the official decoder runs).
    """
    if attn_sim is None and target_embedding is None:
        yield
        return
    transformer = decoder.transformer
    patched: list[nn.Module] = [transformer]
    transformer.forward = _transformer_with_target(transformer, target_embedding)
    if attn_sim is not None:
        for block in transformer.layers:
            block.cross_attn_token_to_image.forward = _attention_with_bias(block.cross_attn_token_to_image, attn_sim)
            patched.append(block.cross_attn_token_to_image)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's official forward


# --------------------------------------------------------------------------
# A predictor-like view of one photo
# --------------------------------------------------------------------------


@dataclass
class Prediction:
    """One decoder call, as the reference predictor returns it.

    Attributes:
        masks: (K, H, W) bool, full-resolution logits > 0.
        scores: (K,) predicted IoU.
        low_res: (K, 4h, 4w) logits.
        high_res: (K, H, W) logits.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res: np.ndarray
    high_res: torch.Tensor


class OracleImage:
    """A photo set on the model, like the reference's ``SamPredictor.set_image``.

    Args:
        sam: an official ``Sam`` (segment_anything or mobile_sam).
        image: (H, W, 3) uint8 RGB.
        mask_rgb: optional (H, W, 3) uint8 rendering of the reference mask;
            it is resized and normalised + padded like the image.
    """

    def __init__(self, sam: nn.Module, image: np.ndarray, mask_rgb: np.ndarray | None = None) -> None:
        self.sam = sam
        self.device = sam.pixel_mean.device
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.original_size = tuple(image.shape[:2])
        pixels = self._to_input(image)
        self.input_size = tuple(pixels.shape[-2:])
        with torch.no_grad():
            self.features = sam.image_encoder(sam.preprocess(pixels))
        self.mask_input = None
        if mask_rgb is not None:
            with torch.no_grad():
                self.mask_input = sam.preprocess(self._to_input(mask_rgb))

    def _to_input(self, array: np.ndarray) -> torch.Tensor:
        resized = self.transform.apply_image(np.ascontiguousarray(array))
        return torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]

    @property
    def grid_hw(self) -> tuple[int, int]:
        return tuple(self.features.shape[-2:])

    def full_size(self, grid_map: torch.Tensor) -> torch.Tensor:
        """(h, w) map -> (H, W): bilinear x4, then the model's ``postprocess_masks``."""
        x = F.interpolate(grid_map[None, None], scale_factor=4, mode="bilinear")
        return self.sam.postprocess_masks(x, input_size=self.input_size, original_size=self.original_size)[0, 0]

    def predict(
        self,
        points_xy: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        attn_sim: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> Prediction:
        """The reference's ``SamPredictor.predict`` (prompts in photo pixels)."""
        dev = self.device
        coords = self.transform.apply_coords(np.asarray(points_xy), self.original_size)
        coords_t = torch.as_tensor(coords, dtype=torch.float, device=dev)[None]
        labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int, device=dev)[None]
        box_t = None
        if box is not None:
            box_t = torch.as_tensor(
                self.transform.apply_boxes(np.asarray(box)[None], self.original_size), dtype=torch.float, device=dev
            )[None]
        mask_t = None
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, dtype=torch.float, device=dev)[None]
        with torch.no_grad(), reference_decoder(self.sam.mask_decoder, attn_sim, target_embedding):
            sparse, dense = self.sam.prompt_encoder(points=(coords_t, labels_t), boxes=box_t, masks=mask_t)
            low, iou = self.sam.mask_decoder(
                image_embeddings=self.features,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            high = self.sam.postprocess_masks(low, self.input_size, self.original_size)
        return Prediction(
            masks=(high[0] > 0).cpu().numpy(),
            scores=iou[0].cpu().numpy(),
            low_res=low[0].cpu().numpy(),
            high_res=high[0],
        )


# --------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------


def reference_cells(ref: OracleImage) -> torch.Tensor:
    """(h, w) bool: grid cells whose sampled, normalised red mask value is > 0."""
    sampled = F.interpolate(ref.mask_input, size=ref.grid_hw, mode="bilinear")
    return sampled[0, 0] > 0


def masked_features(ref: OracleImage) -> torch.Tensor:
    """(n, C) raw features of the selected cells."""
    cells = reference_cells(ref)
    if not bool(cells.any()):
        raise ReferenceCrash("no grid cell inside the reference mask (the reference would give NaN)")
    return ref.features[0].permute(1, 2, 0)[cells]


def similarity_map(image: OracleImage, direction: torch.Tensor) -> torch.Tensor:
    """(H, W) full-resolution cosine similarity with a unit (1, C) direction."""
    feats = image.features[0]
    c, h, w = feats.shape
    feats = feats / feats.norm(dim=0, keepdim=True)
    grid = (direction @ feats.reshape(c, h * w)).reshape(h, w)
    return image.full_size(grid)


def extreme_point(sim: torch.Tensor, largest: bool) -> np.ndarray:
    """(1, 2) (x, y) of the top-1 (or bottom-1) value of the full map, via ``topk``."""
    width = sim.shape[1]
    flat_index = int(sim.flatten().topk(1, largest=largest).indices[0])
    return np.array([[flat_index % width, flat_index // width]])


def guidance_bias(sim: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """(1, 1, 1, h*w): sigmoid of the standardised full map, resized to the grid."""
    standardised = (sim - sim.mean()) / torch.std(sim)
    small = F.interpolate(standardised[None, None], size=grid_hw, mode="bilinear")
    return torch.sigmoid(small).reshape(1, 1, 1, -1)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """XYXY box of a bool mask; the reference crashes on an empty one."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ReferenceCrash("box of an empty mask")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


@dataclass
class OracleResult:
    """What the reference produces for one target photo.

    Attributes:
        mask: (H, W) bool final mask.
        first_mask: (H, W) bool mask before refinement (PerSAM: the guided
            first step; PerSAM-F: the weighted three-scale mask).
        points_xy: (N, 2) prompt points; labels: (N,).
        box: the last box prompt.
        score: predicted IoU of the final mask.
        similarity: (H, W) the full-resolution similarity map the points come from.
        first_low_res: (4h, 4w) low-res logits before refinement (PerSAM: the
            first step's; PerSAM-F: the weighted sum of the three).
    """

    mask: np.ndarray
    first_mask: np.ndarray
    points_xy: np.ndarray
    labels: np.ndarray
    box: np.ndarray
    score: float
    similarity: torch.Tensor
    first_low_res: np.ndarray


def _as_image(sam: nn.Module, image: np.ndarray | OracleImage, mask_rgb: np.ndarray | None = None) -> OracleImage:
    return image if isinstance(image, OracleImage) else OracleImage(sam, image, mask_rgb)


# --------------------------------------------------------------------------
# PerSAM (persam.py)
# --------------------------------------------------------------------------


@dataclass
class PersamTarget:
    """direction: (1, C) unit mean feature; embedding: (1, 1, C) raw mean feature."""

    direction: torch.Tensor
    embedding: torch.Tensor


def persam_target(ref: OracleImage) -> PersamTarget:
    mean = masked_features(ref).mean(0)[None]
    return PersamTarget(direction=mean / mean.norm(dim=-1, keepdim=True), embedding=mean[None])


def persam_segment(test: OracleImage, target: PersamTarget, points_xy: np.ndarray | None = None) -> OracleResult:
    """Location prior, guided first step, two cascaded refinements.

    ``points_xy`` (positive, negative) replaces the ``topk`` points, to follow
    the reference after a different break of a float-rounding tie; the caller
    checks that they are extremes of ``result.similarity``.
    """
    sim = similarity_map(test, target.direction)
    if points_xy is None:
        points = np.concatenate([extreme_point(sim, True), extreme_point(sim, False)], axis=0)
    else:
        points = np.asarray(points_xy).reshape(2, 2)
    labels = np.array([1, 0])
    bias = guidance_bias(sim, test.grid_hw)
    first = test.predict(points, labels, multimask=False, attn_sim=bias, target_embedding=target.embedding)
    step1 = test.predict(points, labels, mask_input=first.low_res[0:1], multimask=True)
    k = int(np.argmax(step1.scores))
    box = tight_box(step1.masks[k])
    step2 = test.predict(points, labels, box=box, mask_input=step1.low_res[k : k + 1], multimask=True)
    k2 = int(np.argmax(step2.scores))
    return OracleResult(
        step2.masks[k2], first.masks[0], points, labels, box, float(step2.scores[k2]), sim, first.low_res[0]
    )


def oracle_persam(sam: nn.Module, ref_image, ref_mask_rgb: np.ndarray | None, test_image) -> OracleResult:
    """Training-free PerSAM on one target photo (arrays or ``OracleImage``s)."""
    ref = _as_image(sam, ref_image, ref_mask_rgb)
    return persam_segment(_as_image(sam, test_image), persam_target(ref))


# --------------------------------------------------------------------------
# PerSAM-F (persam_f.py)
# --------------------------------------------------------------------------


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), p = sigmoid(logits); (1, N) inputs."""
    p = logits.sigmoid()
    return (1 - (2 * (p * target).sum(-1) + 1) / (p.sum(-1) + target.sum(-1) + 1)).sum()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss, mean over pixels; (1, N) inputs."""
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = p * target + (1 - p) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * bce * (1 - p_true) ** gamma).mean(1).sum()


@dataclass
class PersamFTarget:
    """direction: (1, C) unit (max + mean) / 2 feature; weights: (3, 1) fitted mask weights."""

    direction: torch.Tensor
    weights: torch.Tensor


def fit_mask_weights(three: torch.Tensor | None, gt: torch.Tensor, steps: int, lr: float, rerun=None) -> torch.Tensor:
    """The reference's fit of the two mask weights: autograd, AdamW(lr, eps=1e-4), cosine over ``steps``.

    ``three`` is the (3, H*W) full-resolution logits of the frozen decoder;
    ``rerun()`` (if given) produces them anew at every step, as the reference
    does. ``gt`` is (1, H*W) float. Returns (3, 1) weights ``[1 - w1 - w2, w1, w2]``.
    """
    learned = nn.Parameter(torch.full((2, 1), 1.0 / 3.0, device=gt.device))
    optimizer = torch.optim.AdamW([learned], lr=lr, eps=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        logits = rerun() if rerun is not None else three
        weights = torch.cat([1 - learned.sum(0, keepdim=True), learned], dim=0)  # (3, 1)
        combined = (logits * weights).sum(0)[None]
        loss = dice_loss(combined, gt) + focal_loss(combined, gt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return torch.cat([1 - learned.sum(0, keepdim=True), learned], dim=0).detach()


def persam_f_fit(
    ref: OracleImage, ref_mask_rgb: np.ndarray, steps: int = 1000, lr: float = 1e-3, rerun_decoder: bool = True
) -> PersamFTarget:
    """Fit the two mask weights on the reference photo.

    Like the reference, the (frozen, no-grad) decoder is re-run at every step;
    ``rerun_decoder=False`` runs it once and reuses its output, which gives the
    same numbers as long as the decoder is deterministic (a test checks that).
    """
    feats = masked_features(ref)
    pooled = (feats.max(0).values / 2 + feats.mean(0) / 2)[None]
    direction = pooled / pooled.norm(dim=-1, keepdim=True)
    gt = (torch.as_tensor(ref_mask_rgb)[:, :, 0] > 0).float()[None].flatten(1).to(ref.device)
    point = extreme_point(similarity_map(ref, direction), True)
    labels = np.array([1])

    def rerun() -> torch.Tensor:  # (3, H*W) full-resolution logits, no grad
        return ref.predict(point, labels, multimask=True).high_res.flatten(1)

    if rerun_decoder:
        weights = fit_mask_weights(None, gt, steps, lr, rerun=rerun)
    else:
        weights = fit_mask_weights(rerun(), gt, steps, lr)
    return PersamFTarget(direction=direction, weights=weights)


def persam_f_segment(test: OracleImage, target: PersamFTarget, points_xy: np.ndarray | None = None) -> OracleResult:
    """Weighted three-scale mask, then two refinements with box prompts.

    ``points_xy`` (one positive point) replaces the ``topk`` point, as in
    ``persam_segment``.
    """
    sim = similarity_map(test, target.direction)
    points = extreme_point(sim, True) if points_xy is None else np.asarray(points_xy).reshape(1, 2)
    labels = np.array([1])
    three = test.predict(points, labels, multimask=True)
    weighted_high = (three.high_res * target.weights[:, :, None]).sum(0)
    first_mask = (weighted_high > 0).cpu().numpy()
    weights_np = target.weights.cpu().numpy()
    weighted_low = (three.low_res * weights_np[..., None]).sum(0)
    box = tight_box(first_mask)
    step1 = test.predict(points, labels, box=box, mask_input=weighted_low[None], multimask=True)
    k = int(np.argmax(step1.scores))
    box = tight_box(step1.masks[k])
    step2 = test.predict(points, labels, box=box, mask_input=step1.low_res[k : k + 1], multimask=True)
    k2 = int(np.argmax(step2.scores))
    return OracleResult(step2.masks[k2], first_mask, points, labels, box, float(step2.scores[k2]), sim, weighted_low)


def oracle_persam_f(
    sam: nn.Module,
    ref_image,
    ref_mask_rgb: np.ndarray,
    test_images: Sequence,
    steps: int = 1000,
    rerun_decoder: bool = True,
) -> tuple[np.ndarray, list[OracleResult]]:
    """PerSAM-F: fit on the reference, then segment each target; returns ((3,) weights, results)."""
    ref = _as_image(sam, ref_image, ref_mask_rgb)
    target = persam_f_fit(ref, ref_mask_rgb, steps=steps, rerun_decoder=rerun_decoder)
    results = [persam_f_segment(_as_image(sam, t), target) for t in test_images]
    return target.weights[:, 0].cpu().numpy(), results
