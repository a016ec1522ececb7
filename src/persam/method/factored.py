"""SAM's mask decoder, re-associated for a few tokens over many image cells.

The decoder's attentions are between T ~ 5-9 tokens and N = h*w = 4096 image
cells of width C = 256 (internal width Ci = 128, H = 8 heads of d = 16). The
official modules project all N cells (N*C*Ci multiply-adds per projection);
the same products re-associated cost N*C*H*T, about half here, and need no
per-head reshuffling of (N, Ci) tensors:

* token-to-image (queries are tokens): per head, ``q_h k_h^T = (q_h W_k,h) X^T``
  (the key bias adds a constant per query row, which the softmax removes), and
  ``A_h (X W_v,h^T + b_v,h) = (A_h X) W_v,h^T + b_v,h`` because each row of
  ``A_h`` sums to 1 (also after PerSAM's second softmax);
* image-to-token (queries are cells): ``q_h k_h^T = X (W_q,h^T k_h^T) + b_q,h k_h^T``
  and ``out_proj(concat_h A_h v_h) = sum_h A_h (v_h W_o,h^T) + b_o``;
* the two stride-2 transposed convolutions of the upscaling are per-cell
  matrix products on channels-last cells, run in bands of grid rows that
  stay in cache, each band's masks written straight into image order;
* the prompt encoder's mask downscaling (two stride-2 2x2 convolutions, a
  1x1 convolution) keeps its last convolution factored (``mask_rows``): a
  pass adds the mask's few feature columns times its weight;
* the first block's cell-side projections of the image can be computed once
  per image (``FirstBlock``); each pass then adds only its dense prompt's part.

Mathematically this is the official ``MaskDecoder.predict_masks`` (with
PerSAM's guidance as in ``persam.method.guided``); numerically it differs by
float rounding (tests compare it with the official modules). Decoders whose
structure differs fall back to the official path (``supports``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persam.method.attention import shared, token_to_image, update_cells
from persam.method.first_block import Dense, FirstBlock, ImageCells, first_token_to_image, first_update_cells


def supports(decoder: nn.Module) -> bool:
    """Whether ``decoder`` has the official SAM mask decoder's structure."""
    transformer = getattr(decoder, "transformer", None)
    upscaling = getattr(decoder, "output_upscaling", None)
    if transformer is None or not isinstance(upscaling, nn.Sequential) or len(upscaling) != 5:
        return False
    ct1, ln, _, ct2, _ = upscaling
    for ct in (ct1, ct2):
        if (
            type(ct) is not nn.ConvTranspose2d
            or ct.kernel_size != (2, 2)
            or ct.stride != (2, 2)
            or ct.padding != (0, 0)
        ):
            return False
        if ct.bias is None or ct.groups != 1 or ct.output_padding != (0, 0):
            return False
    if type(ln).__name__ != "LayerNorm2d" or not all(hasattr(ln, a) for a in ("weight", "bias", "eps")):
        return False
    attn = getattr(transformer, "final_attn_token_to_image", None)
    return attn is not None and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads"))


def attend_image(
    module: nn.Module, q: torch.Tensor, k: torch.Tensor | ImageCells, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Token-to-image attention, re-associated; the first block's ``ImageCells`` use the image's products."""
    if isinstance(k, ImageCells):
        return first_token_to_image(module, q, k, bias)
    return token_to_image(module, q, k, v, bias)


def cells_step(
    layer: nn.Module,
    keys: torch.Tensor | ImageCells,
    keys_pe: torch.Tensor | ImageCells,
    q: torch.Tensor,
    v: torch.Tensor,
    key_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's image-to-token update, re-associated; the first block's ``ImageCells`` use the image's products."""
    if isinstance(keys, ImageCells):
        return first_update_cells(layer, keys, q, v, key_pe)
    return update_cells(layer, keys, keys_pe, q, v, key_pe)


def two_way(
    transformer: nn.Module,
    keys: torch.Tensor,
    key_pe: torch.Tensor,
    tokens: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor | None,
    attend_image: Callable[..., torch.Tensor] = attend_image,
    cells_step: Callable[..., tuple[torch.Tensor, torch.Tensor]] = cells_step,
    outputs: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-way transformer's blocks, in the official order, with PerSAM's guidance.

    Guidance as described in ``persam.method.guided``. The token-to-image
    attention and the cells' update are passed in: the re-associated ones
    here by default, the official modules' own computation in
    ``persam.method.guided.guided_transformer``.

    Args:
        keys: (B, N, C) image cells (may be one tensor expanded over the batch),
            or the first block's ``ImageCells`` (re-associated path only).
        key_pe: (1, N, C) their positional encoding.
        tokens: (B, T, C) output and prompt tokens.
        bias: (N,) attention bias, or None. target: (C,) target embedding, or None.
        attend_image: ``(module, q, k, v, bias) -> (B, T, C)`` token-to-image attention.
        cells_step: ``(layer, keys, keys + key_pe, q, v, key_pe) -> (keys', keys' + key_pe)``,
            the block's image-to-token attention, residual and ``norm4``.
        outputs: the tokens whose final outputs are wanted (None: all T). The final attention
            updates each token on its own (the cells are not updated by it), so the others are
            left out of it: the output tokens a pass does not use and the prompt tokens.

    Returns:
        (B, T', C) tokens (T' = ``len(outputs)`` or T, in that order) and (B, N, C) cells after the
        final attention.
    """
    query_pe = tokens if target is None else tokens + target
    queries = tokens
    if isinstance(keys, ImageCells):  # their positional terms are in the precomputed projections
        keys_pe = keys
    else:
        keys_pe = (keys[:1] + key_pe).expand_as(keys) if shared(keys) else keys + key_pe
    for layer in transformer.layers:
        if target is not None:
            queries = queries + target
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        queries = layer.norm2(
            queries + attend_image(layer.cross_attn_token_to_image, queries + query_pe, keys_pe, keys, bias)
        )
        queries = layer.norm3(queries + layer.mlp(queries))
        keys, keys_pe = cells_step(layer, keys, keys_pe, queries + query_pe, queries, key_pe)
    final_q = queries + query_pe if target is None else queries + query_pe + target
    if outputs is not None:
        index = torch.as_tensor(list(outputs), dtype=torch.long, device=queries.device)
        queries, final_q = queries.index_select(1, index), final_q.index_select(1, index)
    final = attend_image(transformer.final_attn_token_to_image, final_q, keys_pe, keys, None)
    return transformer.norm_final_attn(queries + final), keys


#: Grid cells upscaled at once by ``_masks``: the band's (cells*16, C/8) activations stay in a core's cache.
UPSCALE_BAND_CELLS = 1024


def _masks(decoder: nn.Module, keys: torch.Tensor, grid_hw: tuple[int, int], hyper: torch.Tensor) -> torch.Tensor:
    """Upscale (B, N, C) cells and form masks with (B, K, C/8) hypernetwork outputs -> (B, K, 4h, 4w).

    Done in bands of grid rows (``UPSCALE_BAND_CELLS`` cells), each image of
    the batch on its own: every cell's upscaling depends on that cell alone,
    so the result is the same as one pass over all cells, while the band's
    activations (16 sub-pixels per cell) stay in cache instead of making
    about ten round trips to memory.
    """
    ct1, ln, act1, ct2, act2 = decoder.output_upscaling
    b, n, c = keys.shape
    h, w = grid_hw
    c4, c8 = ct1.out_channels, ct2.out_channels
    k = hyper.shape[1]
    # As matrix products: columns (a, b', o) of the weight, bias repeated per sub-pixel.
    w1 = ct1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c4)
    w2 = ct2.weight.permute(0, 2, 3, 1).reshape(c4, 4 * c8)
    b1, b2 = ct1.bias.repeat(4), ct2.bias.repeat(4)
    hyper_t = hyper.transpose(1, 2).to(keys.dtype)  # (B, C/8, K)
    out = keys.new_empty((b, k, 4 * h, 4 * w))
    rows = max(1, UPSCALE_BAND_CELLS // w)
    for i in range(b):
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            y = torch.addmm(b1, keys[i, r0 * w : r1 * w], w1).view(-1, 4, c4)
            y = act1(F.layer_norm(y, (c4,), ln.weight, ln.bias, ln.eps))
            z = act2(torch.addmm(b2, y.view(-1, c4), w2))
            m = torch.mm(z.view(-1, c8), hyper_t[i])  # (cells * 16, K)
            # (cell i, j) x (a, b') x (c', d) -> pixel (4i + 2a + c', 4j + 2b' + d)
            m = m.view(r1 - r0, w, 2, 2, 2, 2, k).permute(6, 0, 2, 4, 1, 3, 5)
            out[i, :, 4 * r0 : 4 * r1].view(k, r1 - r0, 2, 2, w, 2, 2).copy_(m)
    return out


def predict_masks(
    decoder: nn.Module,
    first: FirstBlock,
    sparse: torch.Tensor,
    dense: Dense,
    multimask: bool,
    attention_bias: torch.Tensor | None = None,
    target_embedding: torch.Tensor | None = None,
    best_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks``, re-associated, for the masks actually used.

    Args:
        decoder: an official SAM mask decoder (``supports(decoder)``).
        first: the image's cells (``first_block``), with or without its first block's products.
        sparse: (B, T', C) prompt tokens.
        dense: the dense prompt embedding (no-mask vector, or ``mask_rows``).
        multimask: tokens 1..3 (True) or token 0 (False).
        attention_bias: (h*w,) PerSAM attention bias, or None.
        target_embedding: (C,) PerSAM target embedding, or None.
        best_only: keep only each prompt's mask with the highest predicted IoU (the first on
            ties): the IoU head runs before the upscaling, so the others are never formed.

    Returns:
        masks (B, K, 4h, 4w) and iou (B, K), K = 3 (multimask) or 1 (one mask, or ``best_only``).
    """
    b = sparse.shape[0]
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
    if first.projected:
        cells: torch.Tensor | ImageCells = ImageCells(first, dense)
    elif dense.rows is None:
        cells = (first.image + dense.vector).expand(b, -1, -1)
    else:
        cells = torch.baddbmm(first.image, dense.rows, dense.weight.expand(dense.rows.shape[0], -1, -1)).expand(
            b, -1, -1
        )
    chosen = range(1, decoder.num_mask_tokens) if multimask else range(0, 1)
    # only the IoU token and the chosen mask tokens go through the final attention: hs[:, 0] and hs[:, 1 + j]
    wanted = [0, *(1 + i for i in chosen)]
    hs, keys = two_way(
        decoder.transformer, cells, first.key_pe, tokens, attention_bias, target_embedding, outputs=wanted
    )
    # the IoU head predicts every mask token's score from the IoU token: those of the chosen ones
    iou = decoder.iou_prediction_head(hs[:, 0, :])[:, chosen.start : chosen.stop]
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, 1 + j, :]) for j, i in enumerate(chosen)], dim=1)
    if best_only and len(chosen) > 1:
        rows = torch.arange(b, device=iou.device)
        k = torch.argmax(iou, dim=1)
        hyper, iou = hyper[rows, k][:, None], iou[rows, k][:, None]
    return _masks(decoder, keys, first.grid_hw, hyper), iou
