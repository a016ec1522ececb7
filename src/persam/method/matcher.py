"""The Matcher prior (Liu et al., ICLR 2024): where the object is, from DINOv2 patch matching.

Matcher's steps before SAM (its ``Matcher.set_reference``,
``patch_level_matching``, ``clustering`` and ``RobustPromptSampler.sample_points``),
restated on tensors:

1. Reference cells (``pool_reference``): the mask resized to 518 x 518
   (nearest), average-pooled over 14 x 14 patches; a patch is in when any of
   its pixels is.
2. Patch-level matching (``match_patches``): cosine similarity S between the
   (unit) reference patches and the target's; forward bipartite matching
   (Hungarian, maximising S) of the reference cells to target patches, then
   reverse matching of those target patches to all reference patches; a
   forward match is kept when its reverse match falls inside the reference
   mask (all kept if none does). Above 40 matches only the better half (by S)
   stays. The points are the matched patches' centres (x = 14 col + 7) in the
   518 frame, in the order of a Python ``set`` of their indices, as the authors'.
3. Prompt points: the matched points themselves, or (the one-shot FSS-1000
   setting) ``num_centers`` k-means++ centres of them (``kmeans_pp``: seeded,
   re-run until no cluster is empty), truncated to whole pixels.
4. Robust prompt sampling (``sample_prompts``): for each size k in
   ``sample_range``: every k-subset of the points in the authors' order
   (8 points or fewer) or ``max_sample_iterations`` random k-subsets
   (``random.Random(seed).sample``).

SAM's masks and the instance-level choice are ``persam.method.matcher_select``.

Conventions: features (N, C) row-major over the 37 x 37 patch grid; points
(x, y) in the 518 x 518 frame unless said otherwise.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from persam.errors import InputError, MissingExtraError, OptionsError

INPUT_SIZE = 518
PATCH = 14


@dataclass(frozen=True)
class MatcherSettings:
    """Matcher's knobs; the defaults are the authors' one-shot FSS-1000 command (``scripts/fss.sh``).

    Attributes:
        num_centers: k-means centres of the matched points (``--num_centers``).
        use_points: prompt with the matched points themselves instead of centres (``--use_points_or_centers``).
        sample_range: (min, max) points per sampled prompt.
        max_sample_iterations: random subsets per size when there are more than 8 points.
        alpha, beta, exp: score = alpha * emd + beta * purity * coverage ** exp.
        num_merging_mask: masks merged at most (top-k by score).
        topk_scores_threshold: of the top-k, keep those whose score / best score exceeds this.
        emd_filter, purity_filter, coverage_filter: drop masks below these (0 = off).
        use_score_filter: the COCO rule (distance = 1 - score below ``score`` and, normalised, below ``score_norm``).
        score, score_norm: that rule's thresholds.
        multimask: SAM's three masks per prompt instead of one.
        iou_filter: drop masks whose predicted IoU is not above this (0 = off).
        stability_filter: drop masks whose stability score is below this (0 = off).
        box_nms: box IoU above which non-maximum suppression drops a mask (1.0 = keep all).
        seed: seed of the k-means and of the random subsets (per photo).
    """

    num_centers: int = 8
    use_points: bool = False
    sample_range: tuple[int, int] = (4, 6)
    max_sample_iterations: int = 30
    alpha: float = 0.8
    beta: float = 0.2
    exp: float = 1.0
    num_merging_mask: int = 10
    topk_scores_threshold: float = 0.7
    emd_filter: float = 0.0
    purity_filter: float = 0.0
    coverage_filter: float = 0.0
    use_score_filter: bool = False
    score: float = 0.33
    score_norm: float = 0.1
    multimask: bool = False
    iou_filter: float = 0.0
    stability_filter: float = 0.0
    box_nms: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.sample_range
        if lo < 1 or hi < lo:
            raise OptionsError(f"sample range must be 1 <= MIN <= MAX, got {lo}..{hi}", field="sample_range")
        for name in ("num_centers", "max_sample_iterations", "num_merging_mask"):
            if getattr(self, name) < 1:
                raise OptionsError(f"{name} must be at least 1, got {getattr(self, name)}", field=name)

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["sample_range"] = list(self.sample_range)
        return out


@dataclass(frozen=True)
class MatcherReference:
    """What Matcher needs from the references, computed once per concept.

    Attributes:
        features: (ns * N, C) unit DINOv2 patch features of every reference photo.
        pooled: (ns * N,) bool reference cells (``pool_reference`` of each mask).
        backbone: the DINOv2 model's name. backbone_sha256: its weights' SHA-256 (or "random").
        settings: Matcher's knobs for this concept.
    """

    features: torch.Tensor
    pooled: torch.Tensor
    backbone: str
    backbone_sha256: str
    settings: MatcherSettings = MatcherSettings()


def pool_reference(mask: torch.Tensor) -> torch.Tensor:
    """(37 * 37,) bool reference cells of an (H, W) bool photo mask (Matcher's ``ref_masks_pool``).

    Where the nearest 518 x 518 resize loses a tiny mask entirely (the authors
    then mark a 14 x 14 square in the middle, whatever the object), the cells
    are those the mask's pixels cover in the photo instead.

    Raises:
        InputError: the mask is empty.
    """
    if not bool(mask.any()):
        raise InputError("the reference mask is empty; mark the object with nonzero pixels")
    m = mask.float()[None, None]
    resized = F.interpolate(m, size=(INPUT_SIZE, INPUT_SIZE), mode="nearest")
    pooled = F.avg_pool2d(resized, PATCH)[0, 0] > 0
    if not bool(pooled.any()):
        pooled = F.adaptive_max_pool2d(m, (INPUT_SIZE // PATCH, INPUT_SIZE // PATCH))[0, 0] > 0
    return pooled.reshape(-1)


def _assignment(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise MissingExtraError("the matcher prior needs scipy and POT; pip install 'persam[matcher]'") from None
    rows, cols = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


@dataclass(frozen=True)
class Matches:
    """Patch-level matching on one photo.

    Attributes:
        similarity: (ns * N, N) cosine similarity, reference patches x target patches.
        points: (P, 2) int64 matched patch centres (x, y), 518 frame, the authors' order.
        kept_reverse: whether the reverse matching kept a subset (False: none fell in the mask, all kept).
    """

    similarity: torch.Tensor
    points: np.ndarray
    kept_reverse: bool


def match_patches(reference: MatcherReference, target: torch.Tensor) -> Matches:
    """Forward and reverse bipartite matching of the reference cells onto the target's patches.

    Args:
        reference: the concept's reference patches and cells.
        target: (N, C) unit DINOv2 features of the photo.
    """
    sim = reference.features.to(target.device) @ target.t()
    pooled = reference.pooled.to(target.device)
    forward = sim[pooled]
    rows, cols = _assignment(forward)
    scores = forward[rows, cols]
    inside = pooled.nonzero()[:, 0].cpu()
    _, back = _assignment(sim.t()[cols])
    retain = torch.isin(back, inside)
    kept = bool(retain.any())
    if kept:
        cols, scores = cols[retain], scores[retain.to(scores.device)]
    n = len(scores) // 2 if len(scores) > 40 else len(scores)
    order = torch.sort(scores, descending=True)[1][:n].cpu()
    cells = list(set(cols[order].tolist()))  # the authors' order: a Python set of patch indices
    side = INPUT_SIZE // PATCH
    pts = [(c % side * PATCH + PATCH // 2, c // side * PATCH + PATCH // 2) for c in cells]
    return Matches(sim, np.asarray(pts, dtype=np.int64).reshape(-1, 2), kept)


def kmeans_pp(points: np.ndarray, k: int, generator: torch.Generator, max_iters: int = 100) -> torch.Tensor:
    """(k, 2) float32 k-means++ centres of (P, 2) points and their (P,) assignment (the authors' ``kmeans_pp``).

    Seeding: a uniform first centre, then each next one with probability
    proportional to the squared (distance + 1e-6) to the nearest centre;
    Lloyd iterations until the centres stop moving (an empty cluster keeps its centre).
    """
    x = torch.from_numpy(points).float()
    centers = x[torch.randint(x.size(0), (1,), generator=generator)]
    for _ in range(k - 1):
        d = torch.cdist(x, centers).min(dim=1).values + 1e-6
        idx = torch.multinomial(d**2 / torch.sum(d**2), num_samples=1, generator=generator)
        centers = torch.cat([centers, x[idx]], dim=0)
    assign = torch.zeros(x.size(0), dtype=torch.int64)
    for _ in range(max_iters):
        assign = torch.argmin(torch.cdist(x, centers), dim=1)
        new = torch.stack([x[assign == j].mean(0) if bool((assign == j).any()) else centers[j] for j in range(k)])
        if torch.all(torch.eq(new, centers)):
            break
        centers = new.clone()
    return centers, assign


def cluster_points(points: np.ndarray, k: int, generator: torch.Generator) -> np.ndarray:
    """(min(k, P), 2) int64 centres; k-means++ is re-run (same generator) until every cluster has a point."""
    k = min(k, len(points))
    for _ in range(1000):
        centers, assign = kmeans_pp(points, k, generator)
        if torch.unique(assign).shape[0] == k:
            return centers.numpy().astype(np.int64)
    # Duplicate points can leave a cluster empty for ever (the authors' loop would not end): use the distinct points.
    distinct = np.unique(points, axis=0)
    return distinct[:k] if len(distinct) <= k else cluster_points(distinct, k, generator)


def colex_combinations(n: int, k: int) -> list[tuple[int, ...]]:
    """Every k-subset of range(n) in the authors' (colexicographic) order: by last element, then recursively."""
    return sorted(itertools.combinations(range(n), k), key=lambda c: c[::-1])


def sample_prompts(points: np.ndarray, settings: MatcherSettings, rng: random.Random) -> list[np.ndarray]:
    """Matcher's robust prompt sampler: one (M_k, k, 2) array of point sets per size k.

    Args:
        points: (P, 2) prompt points (518 frame), P >= 1.
        settings: sample range and random iterations.
        rng: the seeded source of the random subsets (more than 8 points).
    """
    lo, hi = settings.sample_range
    p = len(points)
    out = []
    for k in range(min(lo, p), min(hi, p) + 1):
        if p > 8:
            index = [rng.sample(range(p), k) for _ in range(settings.max_sample_iterations)]
        else:
            index = [list(c) for c in colex_combinations(p, k)]
        out.append(np.take(points, np.asarray(index, dtype=np.int64), axis=0))
    return out


def prompt_points(matches: Matches, settings: MatcherSettings) -> tuple[np.ndarray, list[np.ndarray]]:
    """(P', 2) prompt points (centres or matched points) and the sampled point sets, seeded by ``settings.seed``."""
    generator = torch.Generator().manual_seed(settings.seed)
    pts = matches.points if settings.use_points else cluster_points(matches.points, settings.num_centers, generator)
    return pts, sample_prompts(pts, settings, random.Random(settings.seed))
