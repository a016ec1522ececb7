"""PerSAM's guidance inside a two-way transformer: one implementation for every decoder family.

SAM's and SAM 2's mask decoders share the two-way transformer's structure
(blocks of ``self_attn``, ``cross_attn_token_to_image``, ``mlp``,
``cross_attn_image_to_token`` with four norms, then ``final_attn_token_to_image``
and ``norm_final_attn``). PerSAM's additions (section 3.3) are made here by
re-running those submodules in the official order:

* target-guided attention: in each block's token-to-image attention the
  softmax-ed map ``A`` becomes ``softmax(A + G)``, ``G`` a (h*w,) bias shared
  by heads and tokens (the reference's double softmax). The attention's
  q/k/v projections are re-run here (``attention``), because SAM 2's
  modules call ``F.scaled_dot_product_attention``, which has no such step;
* target-semantic prompting: the target embedding ``T`` is added to the
  tokens before every block; the query positional embedding carries one copy
  of ``T`` (the reference adds it in place to the tensor that is both), and
  the final token-to-image attention's query gets ``T`` once more.

The block loop itself is ``persam.method.factored.two_way`` (shared with the
re-associated SAM 1 decoder); this module passes it the official modules'
attention. Shapes: tokens (B, T, C), cells (B, N, C), N = h*w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from persam.method import factored
from persam.method.attention import second_softmax


@dataclass(frozen=True)
class Guidance:
    """PerSAM's additions to the decoder.

    Attributes:
        attention_bias: (h*w,) bias ``G`` for token-to-image attention, (B, h*w) one per
            image of a batch of images (``persam.method.decoder.decode_many``), or None.
        target_embedding: (C,) target embedding ``T`` for the tokens, or None.
    """

    attention_bias: torch.Tensor | None = None
    target_embedding: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        """Whether any addition is set (else the official decoder runs unchanged)."""
        return self.attention_bias is not None or self.target_embedding is not None


def attention(
    module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """An official ``Attention`` module's forward (SAM or SAM 2), with PerSAM's optional bias.

    Args:
        module: the decoder's ``Attention`` (q/k/v/out projections, heads).
        q: (B, Nq, C) queries. k: (B, Nk, C) keys. v: (B, Nk, C) values.
        bias: (Nk,) added to the softmax-ed attention before a second softmax; (B, Nk) one per batch element.

    Returns:
        (B, Nq, C) attention output (eval mode: no dropout).
    """
    qh = module._separate_heads(module.q_proj(q), module.num_heads)
    kh = module._separate_heads(module.k_proj(k), module.num_heads)
    vh = module._separate_heads(module.v_proj(v), module.num_heads)
    attn = torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(qh.shape[-1]), dim=-1)
    if bias is not None:
        attn = second_softmax(attn, bias)
    return module.out_proj(module._recombine_heads(attn @ vh))


def _official_cells_step(
    layer: nn.Module, keys: torch.Tensor, keys_pe: torch.Tensor, q: torch.Tensor, v: torch.Tensor, key_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's official image-to-token attention, residual and ``norm4``; the new cells and cells plus ``key_pe``."""
    keys = layer.norm4(keys + layer.cross_attn_image_to_token(q=keys_pe, k=q, v=v))
    return keys, keys + key_pe


def guided_transformer(
    transformer: nn.Module, src: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor, guidance: Guidance
) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayTransformer.forward(src, pos, tokens)`` re-run from its submodules with ``guidance``.

    Args:
        transformer: the decoder's two-way transformer (SAM or SAM 2).
        src: (B, C, h, w) image cells plus dense prompt. pos: (B, C, h, w) positional encoding.
        tokens: (B, T, C) output and prompt tokens, in the family's order.
        guidance: PerSAM's additions.

    Returns:
        (B, T, C) tokens and (B, h*w, C) cells, as the official forward.
    """
    keys, key_pe = src.flatten(2).permute(0, 2, 1), pos.flatten(2).permute(0, 2, 1)
    return factored.two_way(
        transformer,
        keys,
        key_pe,
        tokens,
        guidance.attention_bias,
        guidance.target_embedding,
        attend_image=attention,
        cells_step=_official_cells_step,
    )
