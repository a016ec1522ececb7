"""An independent restatement of P2SAM's PerSeg path (the authors' code), for tests.

It follows /work/shared/docs/p2sam-reference.md step by step on top of the
PerSAM oracle (``reference_oracle``: the reference predictor, full-resolution
maps, ``topk`` points, the patched decoder) and imports nothing from
``persam``: full-resolution similarity maps per prototype, the arg-max of
each, the arg-min of their mean, PerSAM's guidance from the mean map, the
three decoder passes, and the transport score of each part count.

Where the authors' code crashes, this oracle raises ``ReferenceCrash``
(fewer cells than parts, an empty refined mask) or marks the count as
unable to win (an empty predicted mask), as the page suggests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from reference_oracle import OracleImage, ReferenceCrash, extreme_point, guidance_bias, similarity_map, tight_box


def part_reference_cells(ref: OracleImage, mask_rgb: np.ndarray) -> torch.Tensor:
    """(h, w) bool: the mask's first channel resized like the image, zero-padded,
    centred by (max + min) / 2, bilinearly sampled to the grid, > 0."""
    resized = ref.transform.apply_image(np.ascontiguousarray(mask_rgb))[..., 0]
    mask = torch.as_tensor(resized, dtype=torch.float32)
    size = ref.sam.image_encoder.img_size
    padded = F.pad(mask, (0, size - mask.shape[1], 0, size - mask.shape[0]))
    padded = padded - (padded.max() + padded.min()) / 2
    return F.interpolate(padded[None, None], size=ref.grid_hw, mode="bilinear")[0, 0] > 0


def reference_features(ref: OracleImage, mask_rgb: np.ndarray) -> torch.Tensor:
    """``A``: (N, C) raw features of the reference cells, row-major."""
    return ref.features[0].permute(1, 2, 0)[part_reference_cells(ref, mask_rgb)]


def prototypes(features: torch.Tensor, n: int) -> torch.Tensor:
    """(n, C) unit prototypes: the normalised mean (n = 1) or k-means cluster means."""
    from sklearn.cluster import KMeans

    if n == 1:
        raw = features.mean(0, keepdim=True)
    else:
        if features.shape[0] < n:
            raise ReferenceCrash(f"{features.shape[0]} cells for {n} clusters")
        labels = KMeans(n_clusters=n, random_state=0, n_init=10).fit(features.cpu().numpy()).labels_
        raw = torch.stack([features[torch.as_tensor(labels == k)].mean(0) for k in range(n)])
    return raw / raw.norm(dim=-1, keepdim=True)


@dataclass
class PartCandidate:
    """One part count on one photo.

    Attributes:
        parts: the count. mask: (H, W) bool final mask. points_xy: (n + 1, 2).
        labels: (n + 1,). maps: (n, H, W) full-resolution similarity maps.
        mean_map: (H, W) their mean. score: transport cost, or None (empty ``B``).
    """

    parts: int
    mask: np.ndarray
    points_xy: np.ndarray
    labels: np.ndarray
    maps: torch.Tensor
    mean_map: torch.Tensor
    score: float | None


def candidate(test: OracleImage, features: torch.Tensor, n: int, points_xy: np.ndarray | None = None) -> PartCandidate:
    """Part count ``n`` on ``test``: prompts, the three decoder passes, the transport score.

    ``points_xy`` replaces the ``topk`` points (after a float-rounding tie;
    the caller checks that they are extremes of the returned maps).
    """
    import ot

    protos = prototypes(features, n)
    maps = torch.stack([similarity_map(test, protos[i : i + 1]) for i in range(n)])
    mean_map = maps.mean(0)
    if points_xy is None:
        points = np.concatenate([extreme_point(m, True) for m in maps] + [extreme_point(mean_map, False)], axis=0)
    else:
        points = np.asarray(points_xy).reshape(n + 1, 2)
    labels = np.array([1] * n + [0])
    embedding = features.mean(0)[None, None]
    first = test.predict(
        points, labels, multimask=False, attn_sim=guidance_bias(mean_map, test.grid_hw), target_embedding=embedding
    )
    step1 = test.predict(points, labels, mask_input=first.low_res[0:1], multimask=True)
    k = int(np.argmax(step1.scores))
    box = tight_box(step1.masks[k])
    step2 = test.predict(points, labels, box=box, mask_input=step1.low_res[k : k + 1], multimask=True)
    k2 = int(np.argmax(step2.scores))
    low = torch.as_tensor(step2.low_res[k2])[None, None]
    cells = F.interpolate(low, size=test.grid_hw, mode="bilinear")[0, 0] > 0
    score = None
    if bool(cells.any()):
        target = test.features[0].permute(1, 2, 0)[cells]
        a = features.cpu().numpy().astype(np.float64)
        b = target.cpu().numpy().astype(np.float64)
        score = float(
            ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), ot.dist(a, b), numItermax=10_000_000)
        )
    return PartCandidate(n, step2.masks[k2], points, labels, maps, mean_map, score)


def choose(candidates: list[PartCandidate]) -> PartCandidate:
    """The strictly smallest score wins; ties keep the smaller count; empty ``B`` cannot win."""
    best = None
    for c in candidates:
        if c.score is not None and (best is None or c.score < best.score):
            best = c
    if best is None:
        raise ReferenceCrash("no candidate mask covers a cell")
    return best
