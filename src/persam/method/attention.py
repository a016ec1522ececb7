"""The decoder's attentions between few tokens and many image cells, re-associated.

See ``persam.method.factored`` for the idea: the few token-side products are
formed first, so no (N, Ci) projection of the cells is ever built.
Shapes: tokens (B, T, C), cells (B, N, C); H heads of width d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, Ci) -> (B, H, T, d)."""
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)


def shared(x: torch.Tensor) -> bool:
    """Whether every batch element of (B, N, C) ``x`` is the same tensor (batch of one or stride 0)."""
    return x.shape[0] == 1 or x.stride(0) == 0


def second_softmax(attn: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """PerSAM's ``softmax(A + G)`` over the last axis of the softmax-ed attention ``attn``.

    Args:
        attn: (B, ..., N) attention rows over N image cells.
        bias: (N,) one bias for every row, or (B, N) one per batch element
            (photos decoded together, ``persam.method.decoder.decode_many``).
    """
    if bias.dim() == 2:
        bias = bias.reshape(bias.shape[0], *([1] * (attn.dim() - 2)), bias.shape[1])
    return torch.softmax(attn + bias.to(attn.dtype), dim=-1)


def token_to_image(
    module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """An ``Attention`` module with tokens as queries, re-associated.

    Args:
        module: the official attention (q/k/v/out projections, ``num_heads``).
        q: (B, T, C) token queries. k: (B, N, C) cell keys. v: (B, N, C) cell
            values; when both are one tensor expanded over the batch, the
            batch's token rows share one product with them.
        bias: (N,) PerSAM's attention bias (second softmax), (B, N) one per
            batch element (not with shared cells), or None.

    Returns:
        (B, T, C), as ``module(q=q, k=k, v=v)`` when ``bias`` is None.
    """
    heads = module.num_heads
    qh = split_heads(module.q_proj(q), heads)  # (B, H, T, d)
    b, _, t, d = qh.shape
    c = k.shape[-1]
    wk = module.k_proj.weight.view(heads, d, c)
    qk = torch.matmul(qh / math.sqrt(d), wk).reshape(b, heads * t, c)  # (B, H*T, C), scaled
    if shared(k) and shared(v):
        attn = torch.softmax(torch.mm(qk.reshape(b * heads * t, c), k[0].T), dim=-1)  # (B*H*T, N)
        if bias is not None:
            attn = second_softmax(attn, bias.reshape(-1, attn.shape[-1])[0])  # one image: one bias
        ax = torch.mm(attn, v[0]).view(b, heads, t, c)
    else:
        attn = torch.softmax(torch.bmm(qk, k.transpose(1, 2)), dim=-1)  # (B, H*T, N)
        if bias is not None:
            attn = second_softmax(attn, bias)
        ax = torch.bmm(attn, v).view(b, heads, t, c)  # (B, H, T, C)
    wv = module.v_proj.weight.view(heads, d, c)
    out = torch.matmul(ax, wv.transpose(1, 2)) + module.v_proj.bias.view(heads, 1, d)
    return module.out_proj(out.transpose(1, 2).reshape(b, t, heads * d))


def token_side(module: nn.Module, q: torch.Tensor, v: torch.Tensor, c: int) -> tuple[torch.Tensor, ...]:
    """Token-side products of an image-to-token attention (cells are the queries).

    Returns:
        kh (B, H, T, d) scaled keys; m (B, C, H*T) = ``W_q,h^T k_h^T`` per head;
        offset (B, H*T) = ``b_q,h k_h^T``; vo (B, H*T, C) = ``v_h W_o,h^T + b_o / H``.
    """
    heads = module.num_heads
    kh = split_heads(module.k_proj(q), heads)  # (B, H, T, d)
    vh = split_heads(module.v_proj(v), heads)
    b, _, t, d = kh.shape
    kh = kh / math.sqrt(d)  # the softmax scale, on the small side
    wq = module.q_proj.weight.view(heads, d, c)
    m = torch.matmul(wq.transpose(1, 2), kh.transpose(2, 3)).permute(0, 2, 1, 3).reshape(b, c, heads * t)
    offset = torch.matmul(module.q_proj.bias.view(heads, 1, d), kh.transpose(2, 3)).reshape(b, heads * t)
    wo = module.out_proj.weight.view(c, heads, d).permute(1, 2, 0)  # (H, d, C)
    vo = torch.matmul(vh, wo).reshape(b, heads * t, c) + module.out_proj.bias / heads  # (B, H*T, C)
    return kh, m, offset, vo


def update_cells(
    layer: nn.Module, keys: torch.Tensor, keys_pe: torch.Tensor, q: torch.Tensor, v: torch.Tensor, key_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's image-to-token attention, residual and ``norm4``, re-associated.

    Cells are the queries: per head ``q_h k_h^T = X (W_q,h^T k_h^T) + b_q,h k_h^T``
    and ``out_proj(concat_h A_h v_h) = sum_h A_h (v_h W_o,h^T) + b_o``, with
    the output bias folded into the values (each head's attention row sums
    to 1, so adding ``b_o / H`` to every (head, token) row adds ``b_o``).

    Args:
        layer: an official ``TwoWayAttentionBlock``.
        keys: (B, N, C) cells (may be expanded over the batch).
        keys_pe: (B, N, C) ``keys + key_pe``, the attention's queries.
        q: (B, T, C) token keys. v: (B, T, C) token values.
        key_pe: (1, N, C) positional encoding of the cells.

    Returns:
        The new (B, N, C) cells ``norm4(keys + attention)`` and the same plus ``key_pe``.
    """
    module = layer.cross_attn_image_to_token
    _, m, offset, vo = token_side(module, q, v, keys.shape[2])
    logits = torch.baddbmm(offset[:, None, :], keys_pe, m)  # (B, N, H*T)
    return finish_cells(layer, logits, keys, vo, key_pe)


def finish_cells(
    layer: nn.Module, logits: torch.Tensor, residual: torch.Tensor, vo: torch.Tensor, key_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
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
