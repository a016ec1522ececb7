"""SAM 2's square geometry (stretch to S x S, no padding) against the SAM 1 family's (longest side, padding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from extras import require
from persam.backends.base import ImageGeometry
from persam.method.resample import logits_operator, similarity_operator, upscale_logits
from persam.method.target import target_cells, touched_cells

SQUARE = ImageGeometry.for_image((150, 260), 256, (16, 16), resize="square")
LONGEST = ImageGeometry.for_image((150, 260), 256, (16, 16))


def test_square_geometry_fills_the_frame():
    assert SQUARE.resized_hw == (256, 256) and SQUARE.low_res_hw == (64, 64)
    assert LONGEST.resized_hw == (148, 256)  # SAM: aspect kept, rows padded


def test_points_scale_per_axis_as_sam2_transforms():
    sam2_transforms = require("sam2.utils.transforms")
    xy = torch.tensor([[0.0, 0.0], [259.0, 149.0], [130.5, 20.25]])
    want = sam2_transforms.SAM2Transforms(256, 0.0).transform_coords(xy, normalize=True, orig_hw=(150, 260))
    torch.testing.assert_close(SQUARE.to_model_xy(xy), want)
    assert float(LONGEST.to_model_xy(xy)[1, 1]) == pytest.approx(149 * 148 / 150)


def test_cells_cover_the_whole_grid_without_padding():
    """A mask in the photo's bottom-right corner touches the grid's last cell (SAM 1 stops at the padding)."""
    mask = torch.zeros(150, 260, dtype=torch.bool)
    mask[140:, 250:] = True
    assert bool(touched_cells(mask, SQUARE)[15, 15])
    assert not touched_cells(mask, LONGEST)[15].any() and bool(touched_cells(mask, LONGEST)[9, 15])
    full = torch.ones(150, 260, dtype=torch.bool)
    full[0, 0] = False
    assert int(target_cells(full, SQUARE).sum()) == 256  # every cell of the frame is photo
    assert int(target_cells(full, LONGEST).sum()) < 256


def test_masks_come_back_as_sam2_postprocess_masks():
    """One bilinear resize from (4h, 4w) to (H, W); the exact operator agrees with it."""
    torch.manual_seed(0)
    low = torch.randn(3, 64, 64)
    up = upscale_logits(low, SQUARE)
    want = F.interpolate(low[None], (150, 260), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(up, want)
    op = logits_operator(SQUARE)
    torch.testing.assert_close(
        (op.ry @ low[0].double() @ op.rx.T).float(), up[0], atol=1e-4, rtol=1e-4
    )  # float32 resize
    op1 = logits_operator(LONGEST)
    torch.testing.assert_close(
        (op1.ry @ low[0].double() @ op1.rx.T).float(), upscale_logits(low, LONGEST)[0], atol=1e-4, rtol=1e-4
    )  # two float32 resizes there
    sim = torch.rand(16, 16)
    sop = similarity_operator(SQUARE)
    x4 = F.interpolate(sim[None, None], scale_factor=4, mode="bilinear", align_corners=False)
    want = F.interpolate(x4, (150, 260), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close((sop.ry @ sim.double() @ sop.rx.T).float(), want, atol=1e-5, rtol=1e-5)
