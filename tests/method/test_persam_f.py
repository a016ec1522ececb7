import pytest
import torch
import torch.nn.functional as F

from persam.method import fit as pf
from persam.method import persam_f
from persam.method.decoder import decode
from persam.method.resample import upscale_logits
from persam.method.settings import FitSettings
from persam.method.target import TargetFeatures, masked_features


def reference_loss(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The reference's Dice + sigmoid focal loss on flattened (1, N) logits."""
    p = z.sigmoid()
    dice = 1 - (2 * (p * gt).sum(-1) + 1) / (p.sum(-1) + gt.sum(-1) + 1)
    ce = F.binary_cross_entropy_with_logits(z, gt, reduction="none")
    p_t = p * gt + (1 - p) * (1 - gt)
    focal = (0.25 * gt + 0.75 * (1 - gt)) * ce * (1 - p_t) ** 2
    return dice.sum() + focal.mean(1).sum()


def autograd_fit(maps_fn, gt: torch.Tensor, steps: int = 1000) -> torch.Tensor:
    """The reference's optimisation: AdamW(lr 1e-3, eps 1e-4) + cosine, autograd.

    ``maps_fn()`` returns the (3, H, W) logits; the reference calls the
    decoder there at every step.
    """
    weights = torch.nn.Parameter(torch.ones(2, 1) / 3)
    opt = torch.optim.AdamW([weights], lr=1e-3, eps=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    target = gt.float().flatten()[None]
    for _ in range(steps):
        w = torch.cat([1 - weights.sum(0, keepdim=True), weights])
        z = (maps_fn().flatten(1) * w).sum(0, keepdim=True)
        loss = reference_loss(z, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return torch.cat([1 - weights.sum(0, keepdim=True), weights]).detach().flatten()


def smooth_maps(h: int, w: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(3, 1, h // 8, w // 8, generator=g) * scale
    maps = F.interpolate(low, (h, w), mode="bilinear", align_corners=False)[:, 0]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    gt = ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2 <= 1
    maps = maps + torch.tensor([2.0, 0.5, -1.0])[:, None, None] * scale * (gt.float() - 0.5)
    return maps, gt


@pytest.mark.parametrize("scale", [0.3, 8.0])
def test_closed_form_gradient_matches_autograd(scale):
    maps, gt = smooth_maps(40, 56, scale, seed=1)
    problem = pf.pool_problem(maps, gt, block=1)
    w1, w2 = 0.2, 0.45
    weights = torch.tensor([[w1], [w2]], dtype=torch.float64, requires_grad=True)
    z = (maps.double().flatten(1) * torch.cat([1 - weights.sum(0, keepdim=True), weights])).sum(0, keepdim=True)
    loss = reference_loss(z, gt.double().flatten()[None])
    loss.backward()
    assert pf.loss(problem, w1, w2) == pytest.approx(loss.item(), rel=1e-5)
    assert pf.gradient(problem, w1, w2) == pytest.approx(weights.grad.flatten().tolist(), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("scale", [0.3, 8.0, 25.0])
def test_fit_matches_reference_optimiser(scale):
    maps, gt = smooth_maps(48, 64, scale, seed=2)
    want = autograd_fit(lambda: maps, gt)
    step_by_step = pf.optimise(pf.pool_problem(maps, gt, 1), FitSettings(taylor_radius=0.0))
    fast = pf.optimise(pf.pool_problem(maps, gt, 1), FitSettings())
    assert torch.allclose(step_by_step, want, atol=1e-4)
    # The Taylor-extrapolated gradient keeps the trajectory within 1e-3 of the step-by-step loop.
    assert torch.allclose(fast, step_by_step, atol=1e-3)
    assert (want - torch.tensor([1 / 3, 1 / 3, 1 / 3])).abs().max() > 0.05  # the weights really moved


def test_pooled_fit_stays_close():
    maps, gt = smooth_maps(96, 128, 2.0, seed=3)
    exact = pf.optimise(pf.pool_problem(maps, gt, 1), FitSettings(taylor_radius=0.0))
    pooled_problem = pf.pool_problem(maps, gt, 2)
    assert pooled_problem.n_pools < 0.3 * 96 * 128
    assert float(pooled_problem.fg_counts.sum()) == float(gt.sum())  # mask counts are exact
    pooled = pf.optimise(pooled_problem, FitSettings())
    assert torch.allclose(pooled, exact, atol=0.01)


def test_auto_block():
    assert pf.auto_block((1280, 960)) == 1
    assert pf.auto_block((2048, 2048)) == 2


def test_fit_equals_decoder_rerun_loop(tiny_model, photo):
    """The fit on maps computed once reaches the weights of the reference's loop,
    which re-runs the decoder at every step (on the tiny model)."""
    image, mask = photo
    backend = tiny_model.backend
    enc = tiny_model.encode(image)
    gt = torch.from_numpy(mask)
    target = TargetFeatures.from_cells([masked_features(enc, gt)])
    prompt = persam_f.point_prompt(enc, target)

    def rerun_decoder() -> torch.Tensor:
        out = decode(backend, enc, prompt, multimask=True)
        return upscale_logits(out.low_res_logits, enc.geometry)

    want = autograd_fit(rerun_decoder, gt)
    got = pf.optimise(persam_f.fit_problems(backend, enc, [prompt], [gt])[0], FitSettings())
    assert torch.allclose(got, want, atol=2e-3)
    assert float(got.sum()) == pytest.approx(1.0)


def test_two_references_fit_jointly():
    m1, g1 = smooth_maps(32, 40, 2.0, seed=4)
    m2, g2 = smooth_maps(24, 48, 2.0, seed=5)
    joint = pf.merge_problems([pf.pool_problem(m1, g1, 1), pf.pool_problem(m2, g2, 1)])
    assert joint.n_pixels == 32 * 40 + 24 * 48
    single = pf.pool_problem(m1, g1, 1)
    alone = pf.merge_problems([single])  # one problem merged is that problem
    for name in ("fg_base", "fg_deltas", "fg_counts", "bg_base", "bg_deltas", "bg_counts"):
        torch.testing.assert_close(getattr(alone, name), getattr(single, name), rtol=0, atol=0, msg=name)
    assert alone.n_pixels == single.n_pixels == 32 * 40
