"""The foreground-only diffusion loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from persam.jobs.dreambooth.loss import dreambooth_loss, latent_mask, masked_diffusion_loss


def _batch(seed: int = 0, b: int = 2, c: int = 4, h: int = 8, w: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g)


def _square_mask(b: int = 2, size: int = 64, lo: int = 16, hi: int = 40) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    m[:, :, lo:hi, lo:hi] = 1
    return m


def test_latent_mask_pools_by_the_vae_factor_then_thresholds_at_half():
    m = torch.zeros(1, 1, 16, 16)
    m[:, :, 0:8, 0:8] = 1  # block (0, 0) fully covered
    m[:, :, 0:8, 8:13] = 1  # block (0, 1) 5/8 covered -> foreground
    m[:, :, 8:16, 0:3] = 1  # block (1, 0) 3/8 covered -> background
    lm = latent_mask(m, (2, 2))
    assert lm.tolist() == [[[[1.0, 1.0], [0.0, 0.0]]]]


def test_background_changes_do_not_move_the_loss():
    pred, target = _batch()
    mask = _square_mask()  # 64 px image, 8 px latent grid: latent rows/cols 2..4 are foreground
    base = masked_diffusion_loss(pred, target, mask)
    changed = target.clone()
    changed[:, :, 0, :] += 5.0  # latent row 0 is background
    changed[:, :, :, 7] -= 3.0
    assert torch.equal(masked_diffusion_loss(pred, changed, mask), base)


def test_a_foreground_change_moves_the_loss():
    pred, target = _batch()
    mask = _square_mask()
    changed = target.clone()
    changed[0, 1, 3, 3] += 1.0
    assert not torch.isclose(masked_diffusion_loss(pred, changed, mask), masked_diffusion_loss(pred, target, mask))


def test_foreground_mean_is_over_foreground_pixels_and_channels():
    pred, target = _batch()
    mask = _square_mask()
    lm = latent_mask(mask, (8, 8)).bool().expand_as(pred)
    expected = ((pred - target) ** 2)[lm].mean()
    assert torch.allclose(masked_diffusion_loss(pred, target, mask), expected)


def test_all_ones_mask_is_plain_mse():
    pred, target = _batch()
    ones = torch.ones(2, 1, 64, 64)
    assert torch.allclose(masked_diffusion_loss(pred, target, ones), F.mse_loss(pred, target), rtol=1e-6, atol=0)


def test_empty_mask_falls_back_to_plain_mse():
    pred, target = _batch()
    empty = torch.zeros(2, 1, 64, 64)
    assert torch.allclose(masked_diffusion_loss(pred, target, empty), F.mse_loss(pred, target))
    tiny = torch.zeros(2, 1, 64, 64)
    tiny[:, :, 0:2, 0:2] = 1  # under half of one latent block: no latent foreground either
    assert torch.allclose(masked_diffusion_loss(pred, target, tiny), F.mse_loss(pred, target))


def test_dilation_grows_the_foreground():
    mask = _square_mask()
    plain, grown = latent_mask(mask, (8, 8)), latent_mask(mask, (8, 8), dilate=1)
    assert plain.sum() == 2 * 9 and grown.sum() == 2 * 25
    assert torch.all(grown >= plain)
    pred, target = _batch()
    changed = target.clone()
    changed[:, :, 1, 3] += 4.0  # just outside the square, inside the dilated ring
    assert torch.equal(masked_diffusion_loss(pred, changed, mask), masked_diffusion_loss(pred, target, mask))
    assert not torch.equal(
        masked_diffusion_loss(pred, changed, mask, dilate=1), masked_diffusion_loss(pred, target, mask, dilate=1)
    )


def test_gradient_reaches_foreground_only():
    pred, target = _batch()
    pred.requires_grad_(True)
    masked_diffusion_loss(pred, target, _square_mask()).backward()
    assert pred.grad[:, :, 0].abs().sum() == 0
    assert pred.grad[:, :, 3, 3].abs().sum() > 0


def test_dreambooth_loss_adds_weighted_unmasked_prior():
    pred, target = _batch()
    cpred, ctarget = _batch(seed=1)
    mask = _square_mask()
    instance = masked_diffusion_loss(pred, target, mask)
    total = dreambooth_loss(pred, target, mask, cpred, ctarget, prior_weight=0.5)
    assert torch.allclose(total, instance + 0.5 * F.mse_loss(cpred, ctarget))
    assert torch.equal(dreambooth_loss(pred, target, mask), instance)
    with pytest.raises(ValueError):
        dreambooth_loss(pred, target, mask, cpred, None)


def test_bad_shapes_are_refused():
    pred, target = _batch()
    with pytest.raises(ValueError):
        masked_diffusion_loss(pred, target, torch.ones(2, 1, 60, 64))
    with pytest.raises(ValueError):
        masked_diffusion_loss(pred, target[:, :2], torch.ones(2, 1, 64, 64))
