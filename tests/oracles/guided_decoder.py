"""PerSAM's guided mask decoder, written once more from the official sources and the paper; imports nothing of persam.

Sources restated here (read from the installed packages, not from persam):

* ``segment_anything/modeling/mask_decoder.py`` (``MaskDecoder.predict_masks``, ``forward``) and
  ``segment_anything/modeling/transformer.py`` (``TwoWayTransformer``, ``TwoWayAttentionBlock``, ``Attention``);
* ``sam2/modeling/sam/mask_decoder.py`` (token order [object score, IoU, 4 masks, prompts], the high-resolution
  skips in the upscaling, ``_dynamic_multimask_via_stability``) and ``sam2/modeling/sam/transformer.py``
  (the same two-way transformer; its ``Attention`` calls ``F.scaled_dot_product_attention``, restated here as an
  explicit softmax);
* PerSAM (Zhang et al. 2023, section 3.3) as the authors' code computes it (``per_segment_anything``'s
  ``TwoWayTransformer.forward``, ``Attention.forward(..., attn_sim)``):

  - target-guided attention: in each block's token-to-image attention (not the final one) the softmax-ed map
    ``A`` becomes ``softmax(A + S)``, ``S`` one (h*w,) bias for every head and token;
  - target-semantic prompting: ``queries += T`` before every block. Before the first block ``queries`` is the
    token tensor that also serves as the query positional embedding, so that embedding carries one copy of
    ``T`` in every block and in the final attention; the final token-to-image query gets ``T`` once more.

Only the official modules' parameters are used (their ``nn.Linear``, ``nn.LayerNorm``, MLP heads and upscaling
layers are called as building blocks); the order of operations, the attention arithmetic, the guidance and the
output selection are written out here. Shapes: tokens (B, T, C), image cells (B, h*w, C); eval mode, fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Decoded:
    """All four mask tokens' outputs of one decoder run.

    Attributes:
        masks: (B, 4, 4h, 4w) low-resolution mask logits, tokens 0-3.
        iou: (B, 4) predicted IoU of each token.
        object_score: (B, 1) SAM 2's object-score logit (10.0 where the decoder has no such head); None for SAM 1.
    """

    masks: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor | None


def is_sam2(decoder: nn.Module) -> bool:
    """Whether ``decoder`` is ``sam2``'s ``MaskDecoder`` (it has the high-resolution and object-score settings)."""
    return hasattr(decoder, "use_high_res_features") and hasattr(decoder, "pred_obj_scores")


def attend(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_sim=None) -> torch.Tensor:
    """The official ``Attention.forward`` written out: per-head ``softmax(QK^T / sqrt(d)) V``; PerSAM's bias optional.

    Args:
        module: an official ``Attention`` (its q/k/v/out projections and ``num_heads``).
        q: (B, Nq, C). k, v: (B, Nk, C).
        attn_sim: (Nk,) bias added to the softmax-ed attention, then softmax again; None for none.

    Returns:
        (B, Nq, C).
    """
    heads = module.num_heads
    qp, kp, vp = module.q_proj(q), module.k_proj(k), module.v_proj(v)
    b, nq, inner = qp.shape
    nk, d = kp.shape[1], inner // heads
    qh = qp.reshape(b, nq, heads, d).permute(0, 2, 1, 3)
    kh = kp.reshape(b, nk, heads, d).permute(0, 2, 1, 3)
    vh = vp.reshape(b, nk, heads, d).permute(0, 2, 1, 3)
    weights = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", qh, kh) / math.sqrt(d), dim=-1)
    if attn_sim is not None:
        weights = torch.softmax(weights + attn_sim.reshape(1, 1, 1, nk).to(weights.dtype), dim=-1)
    out = torch.einsum("bhqk,bhkd->bhqd", weights, vh).permute(0, 2, 1, 3).reshape(b, nq, inner)
    return module.out_proj(out)


def _block(block: nn.Module, queries, keys, query_pe, key_pe, attn_sim):
    """``TwoWayAttentionBlock.forward`` (same in both packages), the token-to-image attention with ``attn_sim``."""
    if block.skip_first_layer_pe:
        queries = attend(block.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = queries + attend(block.self_attn, q, q, queries)
    queries = block.norm1(queries)
    queries = block.norm2(
        queries + attend(block.cross_attn_token_to_image, queries + query_pe, keys + key_pe, keys, attn_sim)
    )
    queries = block.norm3(queries + block.mlp(queries))
    keys = block.norm4(keys + attend(block.cross_attn_image_to_token, keys + key_pe, queries + query_pe, queries))
    return queries, keys


def two_way(transformer: nn.Module, src: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor, attn_sim, target):
    """``TwoWayTransformer.forward(src, pos, tokens)`` with PerSAM's additions as the authors' code makes them.

    Args:
        src: (B, C, h, w) image embedding plus dense prompt. pos: (B, C, h, w). tokens: (B, T, C).
        attn_sim: (h*w,) or None. target: (C,) target embedding or None.

    Returns:
        (B, T, C) tokens and (B, h*w, C) image cells.
    """
    keys = src.flatten(2).permute(0, 2, 1)
    key_pe = pos.flatten(2).permute(0, 2, 1)
    t = None if target is None else target.reshape(1, 1, -1).to(tokens.dtype)
    query_pe = tokens if t is None else tokens + t  # the authors' in-place add before block 0 (tokens ARE the PE)
    queries = query_pe
    for index, block in enumerate(transformer.layers):
        if t is not None and index > 0:
            queries = queries + t
        queries, keys = _block(block, queries, keys, query_pe, key_pe, attn_sim)
    q = queries + query_pe
    if t is not None:
        q = q + t
    queries = transformer.norm_final_attn(
        queries + attend(transformer.final_attn_token_to_image, q, keys + key_pe, keys)
    )
    return queries, keys


def decode_all(
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    attn_sim: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Decoded:
    """``MaskDecoder.predict_masks`` of either package, with PerSAM's guidance (both None: the plain decoder).

    Args:
        decoder: ``segment_anything``'s or ``sam2``'s ``MaskDecoder``.
        image_embeddings: (1, C, h, w). image_pe: (1, C, h, w) (``PromptEncoder.get_dense_pe()``).
        sparse: (B, N, C) prompt tokens. dense: (B, C, h, w) dense prompt (or (1, C, h, w), broadcast).
        attn_sim: (h*w,) target-guided attention bias, or None. target: (C,) target embedding, or None.
        high_res: SAM 2 only: the (1, C/8, 4h, 4w) and (1, C/4, 2h, 2w) skips (after ``conv_s0``/``conv_s1``).
    """
    sam2 = is_sam2(decoder)
    s = 1 if sam2 and decoder.pred_obj_scores else 0
    rows = ([decoder.obj_score_token.weight] if s else []) + [decoder.iou_token.weight, decoder.mask_tokens.weight]
    b = sparse.shape[0]
    tokens = torch.cat([torch.cat(rows, dim=0)[None].expand(b, -1, -1), sparse], dim=1)
    src = image_embeddings.expand(b, -1, -1, -1) + dense
    pos = image_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape
    hs, cells = two_way(decoder.transformer, src, pos, tokens, attn_sim, target)
    grid = cells.transpose(1, 2).reshape(b, c, h, w)
    if sam2 and decoder.use_high_res_features:
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        up = act2(dc2(act1(ln1(dc1(grid) + high_res[1]))) + high_res[0])
    else:
        up = decoder.output_upscaling(grid)
    n = decoder.num_mask_tokens
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, s + 1 + i]) for i in range(n)], dim=1)
    masks = torch.einsum("bnc,bcp->bnp", hyper, up.flatten(2)).reshape(b, n, up.shape[-2], up.shape[-1])
    iou = decoder.iou_prediction_head(hs[:, s])
    obj = None
    if sam2:
        obj = decoder.pred_obj_score_head(hs[:, 0]) if s else torch.full((b, 1), 10.0, dtype=iou.dtype)
    return Decoded(masks, iou, obj)


def select(decoder: nn.Module, out: Decoded, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``MaskDecoder.forward``'s outputs (eval mode): (B, K, 4h, 4w) logits and (B, K) IoU.

    Multi-mask: tokens 1-3. One mask: token 0, except SAM 2 built with ``dynamic_multimask_via_stability``,
    which keeps token 0 only where its stability (area above +delta over area above -delta, 1 when nothing is
    above -delta) reaches the threshold, else the best of tokens 1-3 by predicted IoU.
    """
    if multimask:
        return out.masks[:, 1:], out.iou[:, 1:]
    if not (is_sam2(decoder) and decoder.dynamic_multimask_via_stability):
        return out.masks[:, :1], out.iou[:, :1]
    delta, thresh = decoder.dynamic_multimask_stability_delta, decoder.dynamic_multimask_stability_thresh
    single = out.masks[:, 0].flatten(1)
    inner, outer = (single > delta).sum(1).float(), (single > -delta).sum(1).float()
    stable = torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer)) >= thresh
    best = out.iou[:, 1:].argmax(1) + 1
    rows = torch.arange(out.masks.shape[0])
    k = torch.where(stable, torch.zeros_like(best), best)
    return out.masks[rows, k][:, None], out.iou[rows, k][:, None]
