"""Target embedding and location prior (PerSAM sections 3.1-3.2).

Conventions: a reference mask is an (H, W) bool tensor in photo pixels; the
embedding grid is (h, w); feature vectors are (C,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from persam.backends.base import EncodedImage, ImageGeometry
from persam.errors import InputError
from persam.method.resample import similarity_operator
from persam.method.settings import CELL_THRESHOLD

# The reference draws the mask as red 128 (CELL_THRESHOLD: see persam.method.settings).
MASK_VALUE = 128


def target_cells(mask: torch.Tensor, geometry: ImageGeometry, threshold: float = CELL_THRESHOLD) -> torch.Tensor:
    """Grid cells that lie inside the reference mask, the reference's way.

    The 0/1 mask, drawn as ``MASK_VALUE``, is resized like the image (PIL
    bilinear on uint8), padded with the neutral value (the padding is 0 after
    SAM's normalisation, which is exactly ``threshold`` in mask units), and
    sampled at each cell by a bilinear resize without antialiasing.

    Args:
        mask: (H, W) bool mask in photo pixels.
        geometry: the photo's geometry for the backend.
        threshold: fraction of ``MASK_VALUE`` a cell sample must exceed.

    Returns:
        (h, w) bool tensor of selected cells.
    """
    rh, rw = geometry.resized_hw
    drawn = Image.fromarray(mask.cpu().numpy().astype(np.uint8) * MASK_VALUE)
    resized = torch.from_numpy(np.asarray(drawn.resize((rw, rh), Image.BILINEAR), dtype=np.float32)) / MASK_VALUE
    s = geometry.input_size
    frame = torch.full((s, s), threshold, dtype=torch.float32)
    frame[:rh, :rw] = resized
    sampled = F.interpolate(frame[None, None], size=geometry.grid_hw, mode="bilinear", align_corners=False)[0, 0]
    return sampled > threshold


@dataclass
class TargetFeatures:
    """Pooled reference features of the concept.

    Attributes:
        mean: (C,) mean of the raw features in the reference mask(s); PerSAM's
            target embedding T_R, used for target-semantic prompting.
        max: (C,) element-wise max of the same features.
        count: number of feature cells pooled.
    """

    mean: torch.Tensor
    max: torch.Tensor
    count: int

    @classmethod
    def from_cells(cls, feature_sets: list[torch.Tensor]) -> TargetFeatures:
        """Pool (n_i, C) raw feature sets (one per reference image) into one target."""
        feats = torch.cat(feature_sets, dim=0)
        return cls(mean=feats.mean(0), max=feats.max(0).values, count=int(feats.shape[0]))

    def direction(self, kind: str) -> torch.Tensor:
        """(C,) unit vector for the similarity map.

        ``"mean"`` is PerSAM's (normalised T_R); ``"maxmean"`` is PerSAM-F's
        reference choice, ``(max + mean) / 2`` normalised.
        """
        vec = self.mean if kind == "mean" else (self.max + self.mean) / 2
        return vec / vec.norm().clamp_min(1e-12)


def touched_cells(mask: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """Grid cells that hold at least one mask pixel's centre (the cells a mask touches).

    Args:
        mask: (H, W) bool mask in photo pixels.
        geometry: the photo's geometry for the backend.

    Returns:
        (h, w) bool tensor.
    """
    ys, xs = torch.nonzero(mask.cpu(), as_tuple=True)
    (h, w), (rh, rw) = geometry.original_hw, geometry.resized_hw
    gh, gw = geometry.grid_hw
    cell_y, cell_x = geometry.input_size / gh, geometry.input_size / gw
    cy = ((ys.double() + 0.5) * (rh / h) / cell_y).long().clamp_max(gh - 1)
    cx = ((xs.double() + 0.5) * (rw / w) / cell_x).long().clamp_max(gw - 1)
    cells = torch.zeros((gh, gw), dtype=torch.bool)
    cells[cy, cx] = True
    return cells


def object_cells(
    mask: torch.Tensor, geometry: ImageGeometry, threshold: float = CELL_THRESHOLD, allow_touched: bool = False
) -> tuple[torch.Tensor, bool]:
    """The cells pooled into an object's target: (h, w) bool, and whether the fallback was used.

    The reference's cell rule (``target_cells``); a mask too small to cover a
    whole cell is an error, or with ``allow_touched`` falls back to the cells
    it touches (``touched_cells``; the video protocol's small objects).

    Raises:
        ValueError: no cell selected (and no fallback), which would otherwise
            give a NaN target.
    """
    cells = target_cells(mask, geometry, threshold)
    if bool(cells.any()):
        return cells, False
    if allow_touched and bool(mask.any()):
        return touched_cells(mask, geometry), True
    h, w = geometry.grid_hw
    raise InputError(
        f"the reference mask covers no whole cell of the {h}x{w} feature grid; draw a larger mask around the object"
    )


def masked_features(encoded: EncodedImage, mask: torch.Tensor, threshold: float = CELL_THRESHOLD) -> torch.Tensor:
    """(n, C) raw features of the cells inside ``mask`` (``object_cells``, no fallback).

    Raises:
        ValueError: the mask covers no whole cell (too small or empty).
    """
    cells, _ = object_cells(mask, encoded.geometry, threshold)
    return cell_features(encoded, cells)


def cell_features(encoded: EncodedImage, cells: torch.Tensor) -> torch.Tensor:
    """(n, C) raw features of the (h, w) bool ``cells``."""
    return encoded.embedding[0].permute(1, 2, 0)[cells.to(encoded.embedding.device)]


def similarity(encoded: EncodedImage, direction: torch.Tensor) -> torch.Tensor:
    """(h, w) cosine similarity of every grid cell with a unit ``direction`` (C,)."""
    return torch.einsum("c,chw->hw", direction.to(encoded.embedding.device), encoded.normalized_features())


def attention_guidance(sim: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(h*w,) target-guided attention bias G (reference form).

    ``G = sigmoid((S - mean) / std)`` with the statistics of the
    full-resolution map, which is then resized back to the grid (bilinear, no
    antialias). All linear, so it is computed on the grid exactly.
    """
    op = similarity_operator(geometry)
    mean, std = op.mean_std(sim)
    dy, dx = op.round_trip
    back = (dy @ sim.double().cpu() @ dx.T - mean) / max(std, 1e-12)
    return torch.sigmoid(back).float().flatten().to(sim.device)
