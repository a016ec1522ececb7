"""The decoder's first block from per-image products, and mask prompts as cell rows.

The first block's cells are ``image + dense`` where the image part is the
same for every pass on one image: its cell-side projections (token-to-image
keys and values, image-to-token queries) are computed once per image
(``FirstBlock``) and each pass only adds its dense prompt's part, which is
one vector on every cell (no mask prompt) or ``rows @ weight`` with few
columns (a mask prompt's downscaled features, ``mask_rows``).


"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from persam.method.attention import finish_cells, split_heads, token_side


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
        image: (1, N, C) image embedding cells, row-major over the (h, w) grid; (B, N, C) for a
            batch of B photos (``persam.method.decoder.decode_many``), one per prompt, never projected.
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
    """An image's cells (or a batch of images' cells, one per prompt), without the first block's products.

    Args:
        image_embeddings: (1, C, h, w), or (B, C, h, w) for B photos decoded together (never projected).
        key_pe: (1, h*w, C) (``Backend.dense_pe_cells``).
    """
    b, c, h, w = image_embeddings.shape
    image = image_embeddings.new_empty((b, h * w, c))
    for i in range(b):  # one 2-D transpose per image: PyTorch's blocked kernel, not the 4-D permute's strided copy
        image[i].copy_(image_embeddings[i].reshape(c, h * w).t())
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


def first_token_to_image(
    module: nn.Module, q: torch.Tensor, cells: ImageCells, bias: torch.Tensor | None
) -> torch.Tensor:
    """``token_to_image`` on the first block's cells, from the image's precomputed keys and values."""
    fb, dense = cells.first, cells.dense
    heads = module.num_heads
    qh = split_heads(module.q_proj(q), heads)  # (B, H, T, d)
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


def first_update_cells(
    layer: nn.Module, cells: ImageCells, q: torch.Tensor, v: torch.Tensor, key_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``update_cells`` on the first block's cells, from the image's precomputed queries."""
    fb, dense = cells.first, cells.dense
    module = layer.cross_attn_image_to_token
    heads, b = module.num_heads, q.shape[0]
    kh, m, offset, vo = token_side(module, q, v, fb.image.shape[2])
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
    return finish_cells(layer, logits, residual, vo, key_pe)


def supports_mask_embedding(prompt_encoder: nn.Module) -> bool:
    """Whether the prompt encoder's dense embeddings (``mask_downscaling``, ``no_mask_embed``) have the
    official SAM structure."""
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
    """(B, h, w, C') features of the mask downscaling before its last 1x1 convolution: its official
    modules (convolutions, ``LayerNorm2d``, activations) on the (B, 1, 4h, 4w) masks, channels last."""
    y = masks
    for module in list(prompt_encoder.mask_downscaling)[:6]:
        y = module(y)
    return y.permute(0, 2, 3, 1)


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
