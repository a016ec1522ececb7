"""PerSAM-F's fit: two learnable weights over SAM's three mask scales (section 3.5).

SAM stays frozen, so the decoder's three full-resolution logit maps
``M1, M2, M3`` of the reference image never change during the fit: they are
computed once. The output ``M = w0 M1 + w1 M2 + w2 M3`` with
``w0 = 1 - w1 - w2`` is linear in the two parameters, so the loss (Dice +
sigmoid focal against the reference mask) and its gradient are sums over
pixels of closed-form terms in ``z = M1 + w1 (M2 - M1) + w2 (M3 - M1)``.

Speed: the gradient is a smooth function of the two weights, and AdamW
moves them by at most about ``lr`` per step, so the exact gradient is
evaluated only at anchor points and extrapolated with its Hessian in between
(``FitSettings.taylor_radius``): about 50 full-resolution evaluations
instead of 1000, with weights equal to the step-by-step loop's to ~1e-5.
Very large references (over 2.5 M pixels) are in addition pooled in 2 x 2
blocks, separately for mask and background pixels: each pool keeps its exact
pixel count and the mean of the three logits, which are smooth bilinear
upsamplings. Tests bound both approximations against the step-by-step loop
and against the reference's loop that re-runs the decoder at every step.

The optimiser is AdamW with PyTorch's update rule and a cosine-annealed
learning rate, written out for the two scalars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from persam.method.settings import FitSettings

FOCAL_ALPHA = 0.25  # focal loss weight of positives (gamma = 2 is written into the terms)
INITIAL_WEIGHTS = (1 / 3, 1 / 3)


@dataclass(frozen=True)
class FitProblem:
    """The fit's data after pooling, split by class of the reference mask.

    For each class (``fg`` = mask pools, ``bg`` = background pools):
    ``*_base`` (P,) mean M1 logit of each pool, ``*_deltas`` (2, P) mean
    (M2 - M1, M3 - M1), ``*_counts`` (P,) pixels in each pool.

    Attributes:
        n_pixels: pixels in all maps (the focal loss is a mean over them).
    """

    fg_base: torch.Tensor
    fg_deltas: torch.Tensor
    fg_counts: torch.Tensor
    bg_base: torch.Tensor
    bg_deltas: torch.Tensor
    bg_counts: torch.Tensor
    n_pixels: int

    @property
    def n_pools(self) -> int:
        return int(self.fg_base.numel() + self.bg_base.numel())


def auto_block(image_hw: tuple[int, int], max_pixels: int = 2_500_000) -> int:
    """Block side for pooling: 1 (pixel by pixel, exact) up to ``max_pixels``.

    Larger photos are pooled in 2x2 blocks (bounded by a test against the
    pixel-by-pixel fit); a 2048 x 2048 reference has 4.2 M pixels.
    """
    return 1 if image_hw[0] * image_hw[1] <= max_pixels else 2


def pool_problem(maps: torch.Tensor, mask: torch.Tensor, block: int) -> FitProblem:
    """Pool (3, H, W) logits and an (H, W) bool mask into per-block, per-class means."""
    h, w = mask.shape
    ph, pw = -h % block, -w % block
    valid = F.pad(torch.ones(1, h, w), (0, pw, 0, ph))
    fg = F.pad(mask[None].float(), (0, pw, 0, ph))
    maps = F.pad(maps.float(), (0, pw, 0, ph))

    def block_sums(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[None], block, divisor_override=1)[0].flatten(1)

    parts = []
    for weight in (fg, valid - fg):
        n = block_sums(weight)[0]
        keep = n > 0
        means = block_sums(maps * weight)[:, keep] / n[keep]
        deltas = torch.stack([means[1] - means[0], means[2] - means[0]]).contiguous()
        parts.extend([means[0].contiguous(), deltas, n[keep].contiguous()])
    return FitProblem(*parts, n_pixels=h * w)


def _weighted(base: torch.Tensor, deltas: torch.Tensor, w1: float, w2: float) -> torch.Tensor:
    return torch.add(base, deltas[0], alpha=w1).add_(deltas[1], alpha=w2)


def loss(problem: FitProblem, w1: float, w2: float) -> float:
    """The reference's loss at (w1, w2): Dice on sigmoid probabilities + sigmoid focal (mean over pixels)."""
    zf = _weighted(problem.fg_base, problem.fg_deltas, w1, w2)
    zb = _weighted(problem.bg_base, problem.bg_deltas, w1, w2)
    pf, pb = torch.sigmoid(zf), torch.sigmoid(zb)
    inter = float(problem.fg_counts @ pf)
    total = inter + float(problem.bg_counts @ pb) + float(problem.fg_counts.sum()) + 1.0
    dice = 1.0 - (2.0 * inter + 1.0) / total
    focal_fg = FOCAL_ALPHA * (1 - pf) ** 2 * F.softplus(-zf)
    focal_bg = (1 - FOCAL_ALPHA) * pb**2 * F.softplus(zb)
    focal = (float(problem.fg_counts @ focal_fg) + float(problem.bg_counts @ focal_bg)) / problem.n_pixels
    return dice + focal


def gradient(problem: FitProblem, w1: float, w2: float) -> tuple[float, float]:
    """d(loss)/d(w1, w2), in closed form.

    With p = sigmoid(z), q = 1 - p, per pool of n pixels:
    Dice: dD/dz = n p q ((2I + 1) - 2 t (S + T + 1)) / (S + T + 1)^2;
    focal, mask (t = 1): alpha q^2 (-log p)  ->  alpha q^2 (2 p log p - q);
    focal, background:   (1 - alpha) p^2 (-log q)  ->  (1 - alpha) p^2 (p - 2 q log q);
    the focal terms divided by the number of pixels.
    """
    zf = _weighted(problem.fg_base, problem.fg_deltas, w1, w2)
    zb = _weighted(problem.bg_base, problem.bg_deltas, w1, w2)
    pf, pb = torch.sigmoid(zf), torch.sigmoid(zb)
    qf, qb = 1.0 - pf, 1.0 - pb
    inter = float(problem.fg_counts @ pf)
    total = inter + float(problem.bg_counts @ pb) + float(problem.fg_counts.sum()) + 1.0
    k_bg = (2.0 * inter + 1.0) / (total * total)
    k_fg = k_bg - 2.0 / total
    scale = 1.0 / problem.n_pixels
    # mask pools: n * q * (p * k_fg + alpha/N * q * (2 p log p - q)), log p = -softplus(-z)
    focal_f = F.softplus(-zf).mul_(-2.0).mul_(pf).sub_(qf).mul_(qf).mul_(FOCAL_ALPHA * scale)
    dz_f = pf.mul(k_fg).add_(focal_f).mul_(qf).mul_(problem.fg_counts)
    # background pools: n * p * (q * k_bg + (1-alpha)/N * p * (p - 2 q log q)), log q = -softplus(z)
    focal_b = F.softplus(zb).mul_(2.0).mul_(qb).add_(pb).mul_(pb).mul_((1 - FOCAL_ALPHA) * scale)
    dz_b = qb.mul(k_bg).add_(focal_b).mul_(pb).mul_(problem.bg_counts)
    g1 = float(problem.fg_deltas[0] @ dz_f) + float(problem.bg_deltas[0] @ dz_b)
    g2 = float(problem.fg_deltas[1] @ dz_f) + float(problem.bg_deltas[1] @ dz_b)
    return g1, g2


class _LocalGradient:
    """The loss gradient near an anchor point, re-anchored as the weights move.

    Around an anchor ``a`` the gradient is ``g(a) + H(a) (w - a)``, with the
    Hessian ``H`` from central differences of the exact gradient. AdamW moves
    the weights by about ``lr`` (<= 1e-3) a step, so an anchor serves many
    steps; it is renewed once the weights are ``radius`` away from it. At
    each renewal the extrapolated gradient is compared with the exact one,
    relative to ``scale`` (AdamW's running gradient RMS, which sets how much
    a gradient error moves the weights): the radius halves when the
    difference exceeds ``tolerance`` and grows by half (up to
    ``max_radius``) when it is well below. It starts small, so it learns the
    curvature before it extrapolates far.
    """

    def __init__(self, problem: FitProblem, max_radius: float, tolerance: float = 1e-2, h: float = 1e-3) -> None:
        self.problem, self.max_radius, self.tolerance, self.h = problem, max_radius, tolerance, h
        self.radius = min(max_radius, 2e-3)
        self.anchor: tuple[float, float] | None = None
        self.evaluations = 0

    def _extrapolate(self, w1: float, w2: float) -> tuple[float, float]:
        d1, d2 = w1 - self.anchor[0], w2 - self.anchor[1]
        hxx, hxy, hyy = self.hess
        return self.g[0] + hxx * d1 + hxy * d2, self.g[1] + hxy * d1 + hyy * d2

    def _renew(self, w1: float, w2: float, scale: float) -> None:
        p, h = self.problem, self.h
        g = gradient(p, w1, w2)
        if self.anchor is not None:
            guess = self._extrapolate(w1, w2)
            err = max(abs(guess[0] - g[0]), abs(guess[1] - g[1])) / max(scale, 1e-12)
            if err > self.tolerance:
                self.radius = max(self.radius / 2, 1e-4)
            elif err < self.tolerance / 4:
                self.radius = min(self.radius * 1.5, self.max_radius)
        cols = []
        for d1, d2 in ((h, 0.0), (0.0, h)):
            up, down = gradient(p, w1 + d1, w2 + d2), gradient(p, w1 - d1, w2 - d2)
            cols.append(((up[0] - down[0]) / (2 * h), (up[1] - down[1]) / (2 * h)))
        self.evaluations += 5
        hxy = 0.5 * (cols[0][1] + cols[1][0])
        self.anchor, self.g, self.hess = (w1, w2), g, (cols[0][0], hxy, cols[1][1])

    def __call__(self, w1: float, w2: float, scale: float) -> tuple[float, float]:
        if self.max_radius <= 0:
            self.evaluations += 1
            return gradient(self.problem, w1, w2)
        if self.anchor is None or max(abs(w1 - self.anchor[0]), abs(w2 - self.anchor[1])) > self.radius:
            self._renew(w1, w2, scale)
        return self._extrapolate(w1, w2)


def optimise(problem: FitProblem, settings: FitSettings) -> torch.Tensor:
    """AdamW + cosine annealing on (w1, w2) from (1/3, 1/3); returns (w0, w1, w2).

    PyTorch's AdamW step (decoupled decay, bias-corrected moments, eps added
    to the corrected root) and ``CosineAnnealingLR`` in closed form, on floats.
    """
    w = list(INITIAL_WEIGHTS)
    m, v = [0.0, 0.0], [0.0, 0.0]
    b1, b2 = settings.betas
    grad_at = _LocalGradient(problem, settings.taylor_radius)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pools are small: threading costs more than it saves
    try:
        for step in range(settings.steps):
            lr = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / settings.steps))
            c1, c2 = 1 - b1 ** (step + 1), math.sqrt(1 - b2 ** (step + 1))
            rms = math.sqrt(min(v)) / math.sqrt(1 - b2**step) if step else 0.0
            grad = grad_at(w[0], w[1], rms + settings.eps)
            for i in range(2):
                w[i] *= 1.0 - lr * settings.weight_decay
                m[i] = b1 * m[i] + (1 - b1) * grad[i]
                v[i] = b2 * v[i] + (1 - b2) * grad[i] * grad[i]
                w[i] -= (lr / c1) * m[i] / (math.sqrt(v[i]) / c2 + settings.eps)
    finally:
        torch.set_num_threads(threads)
    return torch.tensor([1.0 - w[0] - w[1], w[0], w[1]])


def merge_problems(problems: list[FitProblem]) -> FitProblem:
    """One problem over several references (the pixels of all of them)."""
    if len(problems) == 1:
        return problems[0]
    cat = {
        name: torch.cat([getattr(p, name) for p in problems], dim=-1)
        for name in ("fg_base", "fg_deltas", "fg_counts", "bg_base", "bg_deltas", "bg_counts")
    }
    return FitProblem(**cat, n_pixels=sum(p.n_pixels for p in problems))
