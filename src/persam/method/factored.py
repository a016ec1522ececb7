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
  1x1 convolution) is likewise per-patch matrix products on channels-last
  cells, the last one kept factored (``mask_rows``);
* the first block's cell-side projections of the image can be computed once
  per image (``FirstBlock``); each pass then adds only its dense prompt's part.

Mathematically this is the official ``MaskDecoder.predict_masks`` (with
PerSAM's guidance as in ``persam.method.decoder``); numerically it differs by
float rounding (tests compare it with the official modules). Decoders whose
structure differs fall back to the official path (``supports``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def supports(decoder: nn.Module) -> bool:
    """Whether ``decoder`` has the official SAM mask decoder's structure."""
    transformer = getattr(decoder, "transformer", None)
    upscaling = getattr(decoder, "output_upscaling", None)
    if transformer is None or not isinstance(upscaling, nn.Sequential) or len(upscaling) != 5:
        return False
    ct1, ln, _, ct2, _ = upscaling
    for ct in (ct1, ct2):
        if type(ct) is not nn.ConvTranspose2d or ct.kernel_size != (2, 2) or ct.stride != (2, 2) or ct.padding != (0, 0):
            return False
        if ct.bias is None or ct.groups != 1 or ct.output_padding != (0, 0):
            return False
    if type(ln).__name__ != "LayerNorm2d" or not all(hasattr(ln, a) for a in ("weight", "bias", "eps")):
        return False
    attn = getattr(transformer, "final_attn_token_to_image", None)
    return attn is not None and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads"))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, Ci) -> (B, H, T, d)."""
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)


def _shared(x: torch.Tensor) -> bool:
    """Whether every batch element of (B, N, C) ``x`` is the same tensor (batch of one or stride 0)."""
    return x.shape[0] == 1 or x.stride(0) == 0


def token_to_image(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """An ``Attention`` module with tokens as queries, re-associated.

    Args:
        module: the official attention (q/k/v/out projections, ``num_heads``).
        q: (B, T, C) token queries. k: (B, N, C) cell keys. v: (B, N, C) cell
            values; when both are one tensor expanded over the batch, the
            batch's token rows share one product with them. The first
            block's cells (``ImageCells`` as ``k``) use the image's
            precomputed keys and values instead (``FirstBlock``).
        bias: (N,) PerSAM's attention bias (second softmax), or None.

    Returns:
        (B, T, C), as ``module(q=q, k=k, v=v)`` when ``bias`` is None.
    """
    if isinstance(k, ImageCells):
        return _first_token_to_image(module, q, k, bias)
    heads = module.num_heads
    qh = _heads(module.q_proj(q), heads)  # (B, H, T, d)
    b, _, t, d = qh.shape
    c = k.shape[-1]
    wk = module.k_proj.weight.view(heads, d, c)
    qk = torch.matmul(qh / math.sqrt(d), wk).reshape(b, heads * t, c)  # (B, H*T, C), scaled
    if _shared(k) and _shared(v):
        attn = torch.softmax(torch.mm(qk.reshape(b * heads * t, c), k[0].T), dim=-1)  # (B*H*T, N)
        if bias is not None:
            attn = torch.softmax(attn + bias, dim=-1)
        ax = torch.mm(attn, v[0]).view(b, heads, t, c)
    else:
        attn = torch.softmax(torch.bmm(qk, k.transpose(1, 2)), dim=-1)  # (B, H*T, N)
        if bias is not None:
            attn = torch.softmax(attn + bias, dim=-1)
        ax = torch.bmm(attn, v).view(b, heads, t, c)  # (B, H, T, C)
    wv = module.v_proj.weight.view(heads, d, c)
    out = torch.matmul(ax, wv.transpose(1, 2)) + module.v_proj.bias.view(heads, 1, d)
    return module.out_proj(out.transpose(1, 2).reshape(b, t, heads * d))


def _token_side(module: nn.Module, q: torch.Tensor, v: torch.Tensor, c: int) -> tuple[torch.Tensor, ...]:
    """Token-side products of an image-to-token attention (cells are the queries).

    Returns:
        kh (B, H, T, d) scaled keys; m (B, C, H*T) = ``W_q,h^T k_h^T`` per head;
        offset (B, H*T) = ``b_q,h k_h^T``; vo (B, H*T, C) = ``v_h W_o,h^T + b_o / H``.
    """
    heads = module.num_heads
    kh = _heads(module.k_proj(q), heads)  # (B, H, T, d)
    vh = _heads(module.v_proj(v), heads)
    b, _, t, d = kh.shape
    kh = kh / math.sqrt(d)  # the softmax scale, on the small side
    wq = module.q_proj.weight.view(heads, d, c)
    m = torch.matmul(wq.transpose(1, 2), kh.transpose(2, 3)).permute(0, 2, 1, 3).reshape(b, c, heads * t)
    offset = torch.matmul(module.q_proj.bias.view(heads, 1, d), kh.transpose(2, 3)).reshape(b, heads * t)
    wo = module.out_proj.weight.view(c, heads, d).permute(1, 2, 0)  # (H, d, C)
    vo = torch.matmul(vh, wo).reshape(b, heads * t, c) + module.out_proj.bias / heads  # (B, H*T, C)
    return kh, m, offset, vo


def update_cells(layer: nn.Module, keys: "torch.Tensor | ImageCells", keys_pe: "torch.Tensor | ImageCells", q: torch.Tensor,
                 v: torch.Tensor, key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's image-to-token attention, residual and ``norm4``, re-associated.

    Cells are the queries: per head ``q_h k_h^T = X (W_q,h^T k_h^T) + b_q,h k_h^T``
    and ``out_proj(concat_h A_h v_h) = sum_h A_h (v_h W_o,h^T) + b_o``, with
    the output bias folded into the values (each head's attention row sums
    to 1, so adding ``b_o / H`` to every (head, token) row adds ``b_o``).
    The first block's cells (``ImageCells``) use the image's precomputed
    queries when it has them (``FirstBlock``).

    Args:
        layer: an official ``TwoWayAttentionBlock``.
        keys: (B, N, C) cells (may be expanded over the batch), or ``ImageCells``.
        keys_pe: (B, N, C) ``keys + key_pe``, the attention's queries (ignored for ``ImageCells``).
        q: (B, T, C) token keys. v: (B, T, C) token values.
        key_pe: (1, N, C) positional encoding of the cells.

    Returns:
        The new (B, N, C) cells ``norm4(keys + attention)`` and the same plus ``key_pe``.
    """
    if isinstance(keys, ImageCells):
        return _first_update_cells(layer, keys, q, v, key_pe)
    module = layer.cross_attn_image_to_token
    _, m, offset, vo = _token_side(module, q, v, keys.shape[2])
    logits = torch.baddbmm(offset[:, None, :], keys_pe, m)  # (B, N, H*T)
    return _finish_cells(layer, logits, keys, vo, key_pe)


def _finish_cells(layer: nn.Module, logits: torch.Tensor, residual: torch.Tensor, vo: torch.Tensor,
                  key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm4(residual + softmax_per_head(logits) @ vo)`` and the same plus ``key_pe``; ``logits`` is overwritten."""
    heads, norm = layer.cross_attn_image_to_token.num_heads, layer.norm4
    b, n, ht = logits.shape
    # softmax over each head's few tokens, in place (torch.softmax is slow on CPU for a short last dimension)
    per_head = logits.view(b, n, heads, ht // heads)
    per_head.sub_(per_head.amax(dim=-1, keepdim=True)).exp_()
    per_head.div_(per_head.sum(dim=-1, keepdim=True))
    cells = torch.baddbmm(residual, logits, vo)
    cells = F.layer_norm(cells, (cells.shape[-1],), norm.weight, norm.bias, norm.eps)
    return cells, cells + key_pe


def two_way(transformer: nn.Module, keys: torch.Tensor, key_pe: torch.Tensor, tokens: torch.Tensor,
            bias: torch.Tensor | None, target: torch.Tensor | None,
            attend_image: Callable[..., torch.Tensor] = token_to_image,
            cells_step: Callable[..., tuple[torch.Tensor, torch.Tensor]] = update_cells) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-way transformer's blocks, in the official order, with PerSAM's guidance.

    Guidance as described in ``persam.method.decoder``. The token-to-image
    attention and the cells' update are passed in: the re-associated ones
    here by default, the official modules' own computation in
    ``decoder.guided_predict_masks``.

    Args:
        keys: (B, N, C) image cells (may be one tensor expanded over the batch),
            or the first block's ``ImageCells`` (re-associated path only).
        key_pe: (1, N, C) their positional encoding.
        tokens: (B, T, C) output and prompt tokens.
        bias: (N,) attention bias, or None. target: (C,) target embedding, or None.
        attend_image: ``(module, q, k, v, bias) -> (B, T, C)`` token-to-image attention.
        cells_step: ``(layer, keys, keys + key_pe, q, v, key_pe) -> (keys', keys' + key_pe)``,
            the block's image-to-token attention, residual and ``norm4``.

    Returns:
        (B, T, C) tokens and (B, N, C) cells after the final attention.
    """
    query_pe = tokens if target is None else tokens + target
    queries = tokens
    if isinstance(keys, ImageCells):  # their positional terms are in the precomputed projections
        keys_pe = keys
    else:
        keys_pe = (keys[:1] + key_pe).expand_as(keys) if _shared(keys) else keys + key_pe
    for layer in transformer.layers:
        if target is not None:
            queries = queries + target
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        queries = layer.norm2(queries + attend_image(layer.cross_attn_token_to_image, queries + query_pe, keys_pe, keys, bias))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys, keys_pe = cells_step(layer, keys, keys_pe, queries + query_pe, queries, key_pe)
    final_q = queries + query_pe if target is None else queries + query_pe + target
    final = attend_image(transformer.final_attn_token_to_image, final_q, keys_pe, keys, None)
    return transformer.norm_final_attn(queries + final), keys


# ---------------------------------------------------------------- the first block
#
# The first block's cells are ``image + dense`` where the image part is the
# same for every pass on one image: its cell-side projections (token-to-image
# keys and values, image-to-token queries) are computed once per image
# (``FirstBlock``) and each pass only adds its dense prompt's part, which is
# one vector on every cell (no mask prompt) or ``rows @ weight`` with few
# columns (a mask prompt's downscaled features, ``mask_rows``).


@dataclass(frozen=True)
class Dense:
    """A pass's dense prompt embedding on the (N, C) cells.

    Exactly one of: ``vector`` (C,) added to every cell (SAM's no-mask
    embedding), or ``rows`` (B or 1, N, k) times ``weight`` (k, C).
    """

    vector: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    weight: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.vector is None) == (self.rows is None) or (self.rows is None) != (self.weight is None):
            raise ValueError("Dense takes a vector, or rows and a weight")

    def row(self, i: int) -> torch.Tensor:
        """(N, k) rows of batch element ``i`` (one shared set of rows when ``rows`` has batch 1)."""
        assert self.rows is not None
        return self.rows[min(i, self.rows.shape[0] - 1)]


@dataclass(frozen=True)
class FirstBlock:
    """One image's cells for the decoder, and optionally its first block's prompt-independent products.

    Attributes:
        image: (1, N, C) image embedding cells, row-major over the (h, w) grid.
        key_pe: (1, N, C) positional encoding of the cells.
        grid_hw: (h, w).
        keys: (H, N, d) ``(image + pe) W_k,h^T`` of the token-to-image attention (its key
            bias adds a constant to each softmax row, so it is left out), or None.
        values: (H, N, d) ``image W_v,h^T`` (bias added per pass), or None.
        queries: (N, Ci') ``(image + pe) W_q^T`` of the image-to-token attention, heads side by
            side (bias per pass), or None.

    Without the products (``first_block``) a pass builds its first block's
    cells in full; with them (``project_first_block``: three (N, C) x (C, Ci)
    products, about what they save in two to three passes) each pass only
    adds its dense prompt's part, which pays off from a few passes per image.
    """

    image: torch.Tensor
    key_pe: torch.Tensor
    grid_hw: tuple[int, int]
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    queries: torch.Tensor | None = None

    @property
    def projected(self) -> bool:
        return self.keys is not None


def first_block(image_embeddings: torch.Tensor, key_pe: torch.Tensor) -> FirstBlock:
    """An image's cells, without the first block's products.

    Args:
        image_embeddings: (1, C, h, w). key_pe: (1, h*w, C) (``Backend.dense_pe_cells``).
    """
    _, c, h, w = image_embeddings.shape
    image = image_embeddings.permute(0, 2, 3, 1).reshape(1, h * w, c).contiguous()
    return FirstBlock(image=image, key_pe=key_pe, grid_hw=(h, w))


def project_first_block(decoder: nn.Module, first: FirstBlock) -> FirstBlock:
    """``first`` with its first block's products for ``decoder`` (``supports(decoder)``)."""
    layer = decoder.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    image = first.image[0]
    with_pe = image + first.key_pe[0]

    def per_head(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], t2i.num_heads, -1).transpose(0, 1).contiguous()

    return FirstBlock(
        image=first.image,
        key_pe=first.key_pe,
        grid_hw=first.grid_hw,
        keys=per_head(with_pe @ t2i.k_proj.weight.T),
        values=per_head(image @ t2i.v_proj.weight.T),
        queries=with_pe @ i2t.q_proj.weight.T,
    )


@dataclass(frozen=True)
class ImageCells:
    """The first block's (B, N, C) cells, ``image + dense``, kept as their parts."""

    first: FirstBlock
    dense: Dense


def _first_token_to_image(module: nn.Module, q: torch.Tensor, cells: ImageCells, bias: torch.Tensor | None) -> torch.Tensor:
    """``token_to_image`` on the first block's cells, from the image's precomputed keys and values."""
    fb, dense = cells.first, cells.dense
    heads = module.num_heads
    qh = _heads(module.q_proj(q), heads)  # (B, H, T, d)
    b, _, t, d = qh.shape
    n, c = fb.image.shape[1], fb.image.shape[2]
    qh = qh / math.sqrt(d)
    wk = module.k_proj.weight.view(heads, d, c)
    wv = module.v_proj.weight.view(heads, d, c)
    scores = torch.bmm(qh.transpose(0, 1).reshape(heads, b * t, d), fb.keys.transpose(1, 2))  # (H, B*T, N)
    if dense.rows is not None:  # + q_h W_k,h (rows weight)^T: (B, H, T, k) against the rows
        g = torch.matmul(qh, torch.matmul(wk, dense.weight.T)).reshape(b, heads * t, -1)
        by_batch = scores.view(heads, b, t, n)
        for i in range(b):
            by_batch[:, i] += torch.mm(g[i], dense.row(i).T).view(heads, t, n)
    # a vector on every cell adds a constant to each row: the softmax removes it
    attn = torch.softmax(scores, dim=-1)
    if bias is not None:
        attn = torch.softmax(attn + bias, dim=-1)
    out = torch.bmm(attn, fb.values).view(heads, b, t, d)
    if dense.rows is not None:  # + (A rows) (weight W_v,h^T)
        wvd = torch.matmul(dense.weight, wv.transpose(1, 2))  # (H, k, d)
        by_batch = attn.view(heads, b, t, n)
        for i in range(b):
            out[:, i] += torch.bmm(torch.matmul(by_batch[:, i], dense.row(i)), wvd)
    else:  # each attention row sums to 1
        out = out + torch.matmul(wv, dense.vector).view(heads, 1, 1, d)
    out = out + module.v_proj.bias.view(heads, 1, 1, d)
    return module.out_proj(out.permute(1, 2, 0, 3).reshape(b, t, heads * d))


def _first_update_cells(layer: nn.Module, cells: ImageCells, q: torch.Tensor, v: torch.Tensor,
                        key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``update_cells`` on the first block's cells, from the image's precomputed queries."""
    fb, dense = cells.first, cells.dense
    module = layer.cross_attn_image_to_token
    heads, b = module.num_heads, q.shape[0]
    kh, m, offset, vo = _token_side(module, q, v, fb.image.shape[2])
    # per image of the batch, the heads' keys as one block-diagonal (H*d, H*T) matrix
    # against the precomputed (N, H*d) queries
    blocks = torch.stack([torch.block_diag(*kh[i].transpose(1, 2)) for i in range(b)])
    if dense.rows is None:  # the vector's query term, and the vector itself folded into the values (rows sum to H)
        offset = offset + torch.matmul(dense.vector, m)
        vo = vo + dense.vector / heads
    logits = torch.baddbmm(offset[:, None, :], fb.queries.expand(b, -1, -1), blocks)  # (B, N, H*T)
    residual = fb.image.expand(b, -1, -1)
    if dense.rows is not None:
        rows = dense.rows.expand(b, -1, -1)
        logits = logits.baddbmm_(rows, torch.matmul(dense.weight, m))
        residual = torch.baddbmm(residual, rows, dense.weight.expand(b, -1, -1))
    return _finish_cells(layer, logits, residual, vo, key_pe)


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


def predict_masks(decoder: nn.Module, first: FirstBlock, sparse: torch.Tensor, dense: Dense, multimask: bool,
                  attention_bias: torch.Tensor | None = None,
                  target_embedding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks``, re-associated, for the masks actually used.

    Args:
        decoder: an official SAM mask decoder (``supports(decoder)``).
        first: the image's cells (``first_block``), with or without its first block's products.
        sparse: (B, T', C) prompt tokens.
        dense: the dense prompt embedding (no-mask vector, or ``mask_rows``).
        multimask: tokens 1..3 (True) or token 0 (False).
        attention_bias: (h*w,) PerSAM attention bias, or None.
        target_embedding: (C,) PerSAM target embedding, or None.

    Returns:
        masks (B, K, 4h, 4w) and iou (B, K), K = 3 (multimask) or 1.
    """
    b = sparse.shape[0]
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
    if first.projected:
        cells: torch.Tensor | ImageCells = ImageCells(first, dense)
    elif dense.rows is None:
        cells = (first.image + dense.vector).expand(b, -1, -1)
    else:
        cells = torch.baddbmm(first.image, dense.rows, dense.weight.expand(dense.rows.shape[0], -1, -1)).expand(b, -1, -1)
    hs, keys = two_way(decoder.transformer, cells, first.key_pe, tokens, attention_bias, target_embedding)
    chosen = range(1, decoder.num_mask_tokens) if multimask else range(0, 1)
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in chosen], dim=1)
    iou = decoder.iou_prediction_head(hs[:, 0, :])[:, chosen.start : chosen.stop]
    return _masks(decoder, keys, first.grid_hw, hyper), iou


def supports_mask_embedding(prompt_encoder: nn.Module) -> bool:
    """Whether the prompt encoder's dense embeddings (``mask_downscaling``, ``no_mask_embed``) have the official SAM structure."""
    seq = getattr(prompt_encoder, "mask_downscaling", None)
    if not isinstance(seq, nn.Sequential) or len(seq) != 7:
        return False
    convs, norms = (seq[0], seq[3], seq[6]), (seq[1], seq[4])
    for conv, k in zip(convs, (2, 2, 1)):
        if type(conv) is not nn.Conv2d or conv.kernel_size != (k, k) or conv.stride != (k, k):
            return False
        if conv.padding != (0, 0) or conv.groups != 1 or conv.dilation != (1, 1) or conv.bias is None:
            return False
    no_mask = getattr(prompt_encoder, "no_mask_embed", None)
    if not isinstance(no_mask, nn.Embedding) or no_mask.weight.shape[0] != 1:
        return False
    return all(type(n).__name__ == "LayerNorm2d" for n in norms)


def _mask_features(prompt_encoder: nn.Module, masks: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C') features of the mask downscaling before its last 1x1 convolution."""
    conv1, ln1, act1, conv2, ln2, act2, _ = prompt_encoder.mask_downscaling
    b, _, hh, ww = masks.shape
    h2, w2 = hh // 2, ww // 2
    # 2x2 patches of the mask, (kh, kw) order as the convolution weight.
    x = masks.reshape(b, h2, 2, w2, 2).permute(0, 1, 3, 2, 4).reshape(b, h2, w2, 4)
    y = F.linear(x, conv1.weight.reshape(conv1.out_channels, 4), conv1.bias)
    y = act1(F.layer_norm(y, (conv1.out_channels,), ln1.weight, ln1.bias, ln1.eps))
    c1, h, w = conv1.out_channels, h2 // 2, w2 // 2
    y = y.reshape(b, h, 2, w, 2, c1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, 4 * c1)  # (kh, kw, c)
    w2m = conv2.weight.permute(0, 2, 3, 1).reshape(conv2.out_channels, 4 * c1)
    return act2(F.layer_norm(F.linear(y, w2m, conv2.bias), (conv2.out_channels,), ln2.weight, ln2.bias, ln2.eps))


def mask_rows(prompt_encoder: nn.Module, masks: torch.Tensor) -> Dense:
    """``prompt_encoder._embed_masks(masks)`` as ``Dense`` rows and weight, in (B, h*w, .) cell order.

    The last 1x1 convolution is kept as the weight (its bias as a column of
    ones in the rows), so the first block can use its few columns directly.

    Args:
        masks: (B, 1, 4h, 4w) mask logits.
    """
    conv3 = prompt_encoder.mask_downscaling[6]
    y = _mask_features(prompt_encoder, masks)  # (B, h, w, C')
    b, h, w, cin = y.shape
    c = conv3.out_channels
    rows = torch.cat([y.reshape(b, h * w, cin), y.new_ones(b, h * w, 1)], dim=2)
    weight = torch.cat([conv3.weight.reshape(c, cin).T, conv3.bias[None]], dim=0)  # (C'+1, C)
    return Dense(rows=rows, weight=weight)
