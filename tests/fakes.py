"""A hand-made backend whose features are a known function of pixel colour.

Features: each 16x16 cell's mean colour, centred, plus a small constant
channel, zero-padded to 32 channels, so "is there a red square?" has a true
answer. The decoder segments the connected region of cells whose colour
matches the first positive point's cell. Used with PerSAM's guided
components off (the fake decoder has no transformer to guide).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from persam.backends.base import SAM_PIXEL_MEAN, SAM_PIXEL_STD, Backend, Preprocessing

DIM, SIZE = 32, 256


class ColorEncoder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
        rgb = F.avg_pool2d(x * std + mean, 16) / 255.0 - 0.5
        const = torch.full_like(rgb[:, :1], 0.05)
        return torch.cat([rgb, const, torch.zeros(1, DIM - 4, *rgb.shape[-2:])], dim=1)


class PointPromptEncoder(nn.Module):
    """Carries the first point's (x, y, label) in the sparse embedding."""

    image_embedding_size = (SIZE // 16, SIZE // 16)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, DIM, *self.image_embedding_size)

    def forward(self, points=None, boxes=None, masks=None):
        sparse = torch.zeros(1, 1, DIM)
        if points is not None:
            coords, labels = points
            first = int(torch.nonzero(labels[0] == 1)[0]) if bool((labels[0] == 1).any()) else 0
            sparse[0, 0, :2] = coords[0, first]
            sparse[0, 0, 2] = 1.0
        return sparse, torch.zeros(1, DIM, *self.image_embedding_size)


class ColorRegionDecoder(nn.Module):
    """Masks the connected same-colour region around the prompt point."""

    def predict_masks(self, image_embeddings, image_pe, sparse, dense):
        emb = image_embeddings[0, :4]
        h, w = emb.shape[-2:]
        x, y = (int(v) // 16 for v in sparse[0, 0, :2])
        x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
        seed = emb[:, y, x]
        same = F.cosine_similarity(emb, seed[:, None, None], dim=0) > 0.95
        region = torch.zeros(h, w, dtype=torch.bool)
        region[y, x] = True
        for _ in range(h + w):
            grown = (F.max_pool2d(region[None, None].float(), 3, 1, 1)[0, 0] > 0) & same
            if torch.equal(grown, region):
                break
            region = grown
        logits = torch.where(region, 8.0, -8.0).repeat_interleave(4, 0).repeat_interleave(4, 1)
        return logits.expand(1, 4, -1, -1).clone(), torch.full((1, 4), 0.9)


def color_backend() -> Backend:
    return Backend(
        name="color-test",
        image_encoder=ColorEncoder(),
        prompt_encoder=PointPromptEncoder(),
        mask_decoder=ColorRegionDecoder(),
        preprocessing=Preprocessing(input_size=SIZE),
        device=torch.device("cpu"),
    )
