"""Several prompts on one encoded frame: one decoder call per prompt layout.

The video protocol runs the same stage for every object of a frame. SAM's
prompt encoder and mask decoder take a batch of prompts of the same layout
(number of points, box or not, mask logits or not) on one image embedding,
so those prompts share a call; each batch element equals the single-prompt
pass of ``persam.method.decoder.decode`` (up to float rounding). On a CPU a
batch of three costs far less than three calls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from persam.backends.base import Backend, EncodedImage
from persam.method.decoder import DecoderOutput, Prompt, predict


def _layout(prompt: Prompt) -> tuple[int, bool, bool]:
    n_points = 0 if prompt.points_xy is None else int(prompt.points_xy.shape[0])
    return n_points, prompt.box_xyxy is not None, prompt.mask_logits is not None


@torch.inference_mode()
def decode_many(backend: Backend, encoded: EncodedImage, prompts: Sequence[Prompt], multimask: bool) -> list[DecoderOutput]:
    """Run the official prompt encoder and mask decoder (no guidance) on each prompt.

    Args:
        backend: the frozen model.
        encoded: the frame's embedding and geometry.
        prompts: points / box / mask logits in photo pixels (see ``Prompt``).
        multimask: SAM's three masks (tokens 1-3) instead of token 0.

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
        logits, iou = predict(backend, encoded, points, boxes, masks, multimask)
        for j, i in enumerate(idx):
            outputs[i] = DecoderOutput(low_res_logits=logits[j].float(), iou=iou[j].float())
    return [o for o in outputs if o is not None]
