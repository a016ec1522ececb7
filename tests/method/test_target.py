import numpy as np
import pytest
import torch
import torch.nn.functional as F

from persam.backends.base import EncodedImage, ImageGeometry
from persam.method.target import CELL_THRESHOLD, TargetFeatures, attention_guidance, masked_features, target_cells


def test_cells_fully_inside_count():
    # 64x64 photo, input 64, grid 4x4: each cell is a 16x16 block.
    g = ImageGeometry.for_image((64, 64), 64, (4, 4))
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[0:32, 0:16] = True  # cells (0,0) and (1,0) fully covered
    mask[40:48, 40:64] = True  # misses the centre rows 39-40 of cell row 2
    cells = target_cells(mask, g)
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[0, 0] = want[1, 0] = True
    assert torch.equal(cells, want)


def test_cell_needs_its_centre_covered():
    # A cell's sample is the mean of its 2x2 centre pixels: 3 of 4 covered -> 0.75 < 0.966.
    g = ImageGeometry.for_image((64, 64), 64, (4, 4))
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[0:16, 0:16] = True
    mask[7, 7] = False
    assert not target_cells(mask, g)[0, 0]
    mask[7, 7] = True
    assert target_cells(mask, g)[0, 0]


def test_padding_is_neutral_as_in_reference():
    # Photo 32x64 -> resized 32x64 in a 64x64 frame: rows 32.. are padding.
    # A mask touching the bottom edge: the cell straddling image and padding
    # (reference: normalised padding = 0 = threshold) keeps the image part's verdict.
    g = ImageGeometry.for_image((24, 64), 64, (4, 4))  # resized 24x64; cell row 1 spans rows 16..31
    mask = torch.ones(24, 64, dtype=torch.bool)
    mask[:, 32:] = False
    cells = target_cells(mask, g)
    # Reference arithmetic: (128 m - 123.675) / 58.395 in the image, 0 in padding, sampled, > 0.
    frame = torch.zeros(64, 64)
    frame[:24, :] = (mask.float() * 128 - 123.675) / 58.395
    ref = F.interpolate(frame[None, None], size=(4, 4), mode="bilinear", align_corners=False)[0, 0] > 0
    assert torch.equal(cells, ref)
    assert cells[1, 0]  # centre rows 23/24 straddle the image edge


def test_reference_arithmetic_on_random_masks():
    rng = np.random.default_rng(0)
    for hw in [(300, 400), (97, 61)]:
        g = ImageGeometry.for_image(hw, 256, (16, 16))
        blob = torch.from_numpy(rng.random((hw[0] // 10 + 1, hw[1] // 10 + 1)) > 0.4)
        mask = blob.repeat_interleave(10, 0).repeat_interleave(10, 1)[: hw[0], : hw[1]]
        from PIL import Image

        rh, rw = g.resized_hw
        red = np.asarray(
            Image.fromarray(mask.numpy().astype(np.uint8) * 128).resize((rw, rh), Image.BILINEAR), dtype=np.float32
        )
        frame = torch.zeros(256, 256)
        frame[:rh, :rw] = (torch.from_numpy(red) - 123.675) / 58.395
        ref = F.interpolate(frame[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0] > 0
        assert torch.equal(target_cells(mask, g), ref)


def test_empty_selection_is_an_error_not_nan():
    g = ImageGeometry.for_image((64, 64), 64, (4, 4))
    enc = EncodedImage(embedding=torch.randn(1, 8, 4, 4), geometry=g)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[0:6, 0:6] = True  # misses every cell centre (pixels 7-8 of each 16-px block)
    with pytest.raises(ValueError, match="larger mask"):
        masked_features(enc, mask)


def test_target_pooling_and_directions():
    a, b = torch.tensor([[1.0, 0.0], [3.0, 2.0]]), torch.tensor([[2.0, 4.0]])
    t = TargetFeatures.from_cells([a, b])
    assert torch.allclose(t.mean, torch.tensor([2.0, 2.0]))
    assert torch.allclose(t.max, torch.tensor([3.0, 4.0]))
    assert torch.allclose(t.direction("mean"), torch.tensor([1.0, 1.0]) / 2**0.5)
    assert torch.allclose(t.direction("maxmean"), torch.tensor([2.5, 3.0]) / torch.tensor([2.5, 3.0]).norm())


def test_guidance_equals_reference_formula():
    torch.manual_seed(0)
    g = ImageGeometry.for_image((300, 500), 1024, (64, 64))
    sim = torch.rand(64, 64) * 2 - 1
    full = F.interpolate(sim[None, None], scale_factor=4, mode="bilinear", align_corners=False)
    full = F.interpolate(full, (1024, 1024), mode="bilinear", align_corners=False)[
        ..., : g.resized_hw[0], : g.resized_hw[1]
    ]
    full = F.interpolate(full, g.original_hw, mode="bilinear", align_corners=False)[0, 0]
    full = (full - full.mean()) / torch.std(full)
    want = torch.sigmoid(F.interpolate(full[None, None], size=(64, 64), mode="bilinear", align_corners=False)).flatten()
    assert torch.allclose(attention_guidance(sim, g), want, atol=1e-5)


def test_cell_threshold_value():
    assert CELL_THRESHOLD == pytest.approx(0.96621, abs=1e-5)


def test_photo_features_are_unit_cells_as_torch_norm_gives():
    emb = torch.randn(1, 32, 6, 7) * 3
    emb[0, :, 2, 3] = 0  # a zero cell stays zero (no division by zero)
    geometry = ImageGeometry.for_image((96, 112), 112, (6, 7))
    feats = EncodedImage(emb, geometry).normalized_features()
    expected = emb[0] / emb[0].norm(dim=0, keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(feats, expected, atol=1e-6, rtol=1e-6)
    others = torch.ones(6, 7, dtype=torch.bool)
    others[2, 3] = False
    assert torch.allclose(feats.square().sum(0)[others], torch.ones(()), atol=1e-5)
    assert feats[:, 2, 3].eq(0).all()
