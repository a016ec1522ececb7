"""Inference-only rewrites of a loaded image encoder (same arithmetic, fewer copies).

* Convolution + BatchNorm pairs (TinyViT's ``Conv2d_BN``, any ``nn.Sequential``
  of exactly a ``Conv2d`` then a ``BatchNorm2d``) are folded into one
  convolution with PyTorch's ``fuse_conv_bn_eval``: eval-mode BatchNorm is an
  affine map per channel, so the result differs only by float rounding.
* Weights are stored channels-last, and ``Backend.encode`` feeds a
  channels-last input: oneDNN then runs 1x1 and depthwise convolutions without
  re-ordering each activation.
* In bf16 the encoder's weights are cast once, and it runs without autocast.

None of this touches the prompt encoder or the mask decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _is_conv_bn(module: nn.Module) -> bool:
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return False
    children = list(module.children())
    return (
        len(children) == 2
        and type(children[0]) is nn.Conv2d
        and type(children[1]) is nn.BatchNorm2d
        and children[1].track_running_stats
    )


def fold_conv_bn(module: nn.Module) -> int:
    """Replace every eval-mode Conv2d+BatchNorm2d ``Sequential`` below ``module``.

    Returns:
        The number of pairs folded.
    """
    folded = 0
    for name, child in list(module.named_children()):
        if _is_conv_bn(child):
            conv, bn = list(child.children())
            setattr(module, name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
            folded += 1
        else:
            folded += fold_conv_bn(child)
    return folded


def prepare_image_encoder(encoder: nn.Module, precision: str) -> nn.Module:
    """Fold BatchNorms, go channels-last and cast to ``precision``, in place.

    Args:
        encoder: an image encoder already in eval mode with its weights loaded.
        precision: "fp32" or "bf16".

    Returns:
        ``encoder`` itself.
    """
    with torch.no_grad():
        fold_conv_bn(encoder)
        encoder.to(memory_format=torch.channels_last)
        if precision == "bf16":
            encoder.to(torch.bfloat16)
    return encoder.requires_grad_(False)
