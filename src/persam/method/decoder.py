"""Running SAM's official mask decoder, optionally with PerSAM's guidance.

Guidance is injected by re-running the decoder's own submodules (its
two-way transformer blocks, attention projections, upscaling and heads) in
the official order, with two additions (PerSAM, section 3.3):

* target-guided attention: in each token-to-image cross-attention of the
  two-way blocks, the softmax-ed attention map ``A`` becomes
  ``softmax(A + G)`` with ``G`` a (h*w,) bias shared by heads and tokens;
* target-semantic prompting: the target embedding ``T`` is added to the
  tokens before every block. As in the reference, the query positional
  embedding carries one copy of ``T`` (the reference adds it in place to the
  tensor that is both), and the final token-to-image attention's query gets
  ``T`` once more: ``q = queries + (tokens + T) + T``.

``guided_predict_masks`` is that re-run, written to be read against the
official code; ``decode`` runs the same computation re-associated
(``persam.method.factored``; ``persam bench`` times both) unless ``exact``.
``decode_many`` runs several prompts on one image, batched by prompt layout
(the video protocol's objects, the part-aware prior's candidates).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from persam.backends.base import Backend, EncodedImage
from persam.method import factored, first_block


@dataclass(frozen=True)
class Guidance:
    """PerSAM's additions to the decoder.

    Attributes:
        attention_bias: (h*w,) bias ``G`` for token-to-image attention, or None.
        target_embedding: (C,) target embedding ``T`` for the tokens, or None.
    """

    attention_bias: torch.Tensor | None = None
    target_embedding: torch.Tensor | None = None


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
    def of(cls, prompt: Prompt) -> "PromptRecord":
        def number(v: float) -> float:
            return int(v) if float(v).is_integer() else float(v)

        points = () if prompt.points_xy is None else tuple(
            (number(x), number(y)) for x, y in prompt.points_xy.reshape(-1, 2).tolist())
        labels = () if prompt.labels is None else tuple(int(v) for v in prompt.labels.reshape(-1).tolist())
        box = None if prompt.box_xyxy is None else tuple(number(v) for v in prompt.box_xyxy.reshape(-1).tolist())
        return cls(points, labels, box, prompt.mask_logits is not None)

    def to_dict(self) -> dict[str, object]:
        """``{"points_xy": [[x, y], ...], "point_labels": [...], "box_xyxy": [...] or None}``."""
        return {"points_xy": [list(p) for p in self.points_xy], "point_labels": list(self.point_labels),
                "box_xyxy": None if self.box_xyxy is None else list(self.box_xyxy)}


@dataclass(frozen=True)
class DecoderOutput:
    """Masks of one decoder pass.

    Attributes:
        low_res_logits: (K, 4h, 4w) float32 logits; K = 1 (single) or 3 (multi-mask).
        iou: (K,) float32 predicted IoU of each mask.
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor

    def best(self) -> tuple[torch.Tensor, float]:
        """(4h, 4w) logits of the mask with the highest predicted IoU, and that IoU."""
        k = int(torch.argmax(self.iou))
        return self.low_res_logits[k], float(self.iou[k])


def attention(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """An official SAM ``Attention`` module's forward, with PerSAM's optional bias.

    Args:
        module: the decoder's ``Attention`` (q/k/v/out projections, heads).
        q: (B, Nq, C) queries. k: (B, Nk, C) keys. v: (B, Nk, C) values.
        bias: (Nk,) added to the softmax-ed attention before a second softmax.

    Returns:
        (B, Nq, C) attention output.
    """
    qh = module._separate_heads(module.q_proj(q), module.num_heads)
    kh = module._separate_heads(module.k_proj(k), module.num_heads)
    vh = module._separate_heads(module.v_proj(v), module.num_heads)
    attn = torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(qh.shape[-1]), dim=-1)
    if bias is not None:
        attn = torch.softmax(attn + bias.to(attn.dtype), dim=-1)
    return module.out_proj(module._recombine_heads(attn @ vh))


def _official_cells_step(layer: nn.Module, keys: torch.Tensor, keys_pe: torch.Tensor, q: torch.Tensor, v: torch.Tensor,
                         key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's official image-to-token attention, residual and ``norm4``; the new cells and cells plus ``key_pe``."""
    keys = layer.norm4(keys + layer.cross_attn_image_to_token(q=keys_pe, k=q, v=v))
    return keys, keys + key_pe


def guided_predict_masks(
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    guidance: Guidance,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` re-run from its submodules with ``guidance``.

    Shapes as the official method: embeddings (1, C, h, w), sparse (B, N, C),
    dense (B, C, h, w) -> masks (B, 4, 4h, 4w), iou (B, 4).
    """
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense
    pos = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    keys, key_pe = src.flatten(2).permute(0, 2, 1), pos.flatten(2).permute(0, 2, 1)
    hs, keys = factored.two_way(
        decoder.transformer, keys, key_pe, tokens, guidance.attention_bias, guidance.target_embedding,
        attend_image=attention, cells_step=_official_cells_step,
    )
    upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
    n = decoder.num_mask_tokens
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in range(n)], dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, decoder.iou_prediction_head(hs[:, 0, :])


#: ``EncodedImage.derived`` key of the image's ``first_block.FirstBlock``.
FIRST_BLOCK = "persam.factored.first_block"
#: Batches of at least this many prompts make the image's first-block products
#: (``first_block.project_first_block``) worth computing: the video protocol's
#: several objects per frame; single prompts (photos: 3-4 passes) go without.
PROJECT_FROM_BATCH = 2


def predict(backend: Backend, encoded: EncodedImage, points: tuple[torch.Tensor, torch.Tensor] | None,
            boxes: torch.Tensor | None, masks: torch.Tensor | None, multimask: bool, guidance: Guidance | None = None,
            exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt encoder and mask decoder on a batch of prompts, in fp32.

    Args:
        backend: the frozen model.
        encoded: the image (its (1, C, h, w) embedding; the re-associated
            decoder keeps its per-image cells and, from the first batch of
            ``PROJECT_FROM_BATCH`` prompts, its first-block products with it,
            ``EncodedImage.derived``).
        points: (B, N, 2) (x, y) in encoder-frame pixels and (B, N) int labels, or None.
        boxes: (B, 4) XYXY in encoder-frame pixels, or None.
        masks: (B, 1, 4h, 4w) mask logits, or None.
        multimask: SAM's three masks (tokens 1-3) instead of token 0.
        guidance: PerSAM's decoder additions, or None.
        exact: run the official modules (prompt encoder, decoder submodules in
            the official order) instead of the re-associated decoder
            (``persam.method.factored``); also used when the decoder's
            structure is not the official one.

    Returns:
        logits (B, K, 4h, 4w) and iou (B, K), K = 3 (multimask) or 1.
    """
    encoder, decoder = backend.prompt_encoder, backend.mask_decoder
    embedding = encoded.embedding
    guidance = guidance or Guidance()
    if not exact and factored.supports(decoder) and first_block.supports_mask_embedding(encoder):
        first = encoded.derived(FIRST_BLOCK, lambda emb: first_block.first_block(emb, backend.dense_pe_cells()))
        given = points[0] if points is not None else boxes if boxes is not None else masks
        batch = 1 if given is None else given.shape[0]
        if not first.projected and batch >= PROJECT_FROM_BATCH:  # kept for the image's later passes
            first = encoded.derived(FIRST_BLOCK, lambda emb: first_block.project_first_block(decoder, first), replace=True)
        if masks is None:
            sparse, _ = encoder(points=points, boxes=boxes, masks=None)
            dense = first_block.Dense(vector=encoder.no_mask_embed.weight[0])
        else:
            # batch size from the masks when there is no point or box, as the official encoder
            sparse, _ = encoder(points=points, boxes=boxes, masks=masks if points is None and boxes is None else None)
            dense = first_block.mask_rows(encoder, masks)
        return factored.predict_masks(
            decoder, first, sparse, dense, multimask,
            attention_bias=guidance.attention_bias, target_embedding=guidance.target_embedding,
        )
    sparse, dense = encoder(points=points, boxes=boxes, masks=masks)
    if dense.shape[0] != sparse.shape[0]:  # no mask prompt: one broadcast dense embedding
        dense = dense.expand(sparse.shape[0], -1, -1, -1)
    args = (embedding, backend.dense_pe(), sparse, dense)
    if guidance.attention_bias is None and guidance.target_embedding is None:
        logits, iou = decoder.predict_masks(*args)
    else:
        logits, iou = guided_predict_masks(decoder, *args, guidance)
    sl = slice(1, None) if multimask else slice(0, 1)
    return logits[:, sl], iou[:, sl]


def decode(backend: Backend, encoded: EncodedImage, prompt: Prompt, multimask: bool, guidance: Guidance | None = None,
           exact: bool = False) -> DecoderOutput:
    """One pass of the prompt encoder and mask decoder on an encoded image.

    Args:
        backend: the frozen model.
        encoded: the image's embedding and geometry.
        prompt: points / box / mask logits in photo pixels.
        multimask: return SAM's three masks (tokens 1-3) instead of token 0.
        guidance: PerSAM's decoder additions; None runs the plain decoder.
        exact: official submodules in official order (see ``predict``).
    """
    return decode_many(backend, encoded, [prompt], multimask, guidance, exact)[0]


def _layout(prompt: Prompt) -> tuple[int, bool, bool]:
    n_points = 0 if prompt.points_xy is None else int(prompt.points_xy.shape[0])
    return n_points, prompt.box_xyxy is not None, prompt.mask_logits is not None


@torch.inference_mode()
def decode_many(backend: Backend, encoded: EncodedImage, prompts: Sequence[Prompt], multimask: bool,
                guidance: Guidance | None = None, exact: bool = False) -> list[DecoderOutput]:
    """The prompt encoder and mask decoder on several prompts on one image, one call per prompt layout.

    Prompts of the same layout (number of points, box or not, mask logits or
    not) share one batched call; each result equals the single-prompt pass
    up to float rounding.

    Args:
        backend: the frozen model.
        encoded: the image's embedding and geometry.
        prompts: points / box / mask logits in photo pixels (see ``Prompt``).
        multimask: SAM's three masks (tokens 1-3) instead of token 0.
        guidance: PerSAM's decoder additions for every prompt, or None.
        exact: official submodules in official order (see ``predict``).

    Returns:
        One ``DecoderOutput`` per prompt, in order: (K, 4h, 4w) logits and (K,) IoU.
    """
    groups: dict[tuple[int, bool, bool], list[int]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        groups[_layout(prompt)].append(i)
    dev = backend.device
    geometry = encoded.geometry
    outputs: list[DecoderOutput | None] = [None] * len(prompts)
    for (n_points, has_box, has_mask), idx in groups.items():
        batch = [prompts[i] for i in idx]
        points = None
        if n_points:
            coords = torch.stack([geometry.to_model_xy(p.points_xy.to(dev).float()) for p in batch])
            labels = torch.stack([p.labels.to(dev, torch.int).view(-1) for p in batch])
            points = (coords, labels)
        boxes = None
        if has_box:
            boxes = torch.stack([geometry.to_model_xy(p.box_xyxy.to(dev).float().view(2, 2)).view(4) for p in batch])
        masks = None
        if has_mask:
            masks = torch.stack([p.mask_logits.to(dev, torch.float32).view(1, *geometry.low_res_hw) for p in batch])
        logits, iou = predict(backend, encoded, points, boxes, masks, multimask, guidance, exact)
        for j, i in enumerate(idx):
            outputs[i] = DecoderOutput(low_res_logits=logits[j].float(), iou=iou[j].float())
    return [o for o in outputs if o is not None]
