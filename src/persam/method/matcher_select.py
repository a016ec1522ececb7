"""The Matcher prior after the prompts: SAM's masks for the sampled point sets, scored and merged.

Matcher's modified automatic mask generator (its ``_process_sel_batch``),
restated: every sampled point set is one decoder prompt; the prompts run in
batches through SAM's decoder (one call per set size and chunk of
``CHUNK`` prompts); a mask is dropped when its predicted IoU is not above
``iou_filter`` or its stability score is below ``stability_filter`` (both
off in the one-shot FSS setting); box non-maximum suppression (``box_nms``;
1.0 keeps all) orders the rest by predicted IoU. The authors' filter of
boxes touching a crop edge never applies to the whole-photo crop.

Instance-level matching (their ``get_mask_scores`` and ``mask_generation``):
each mask's cells are the 37 x 37 patches its pixels touch (OpenCV's area
resize > 0; all cells when the mask is empty); ``emd`` = 1 - exact optimal
transport cost between the reference cells and the mask's cells (uniform
weights, cost (1 - cosine) / 2); ``purity`` = matched points inside the mask /
mask cells; ``coverage`` = matched points inside / all matched points. Score
= alpha emd + beta purity coverage^exp; the optional metric filters, then
either the top ``num_merging_mask`` masks whose score / best exceeds
``topk_scores_threshold`` or (``use_score_filter``) the COCO distance rule;
the final mask is their union.

The one deliberate departure: SAM sees the photo at its own size (persam's
shared, indexable embedding) where the authors feed SAM the 518 x 518 resize;
points move from the 518 frame to the photo by x W / 518, y H / 518.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from persam.backends.base import Backend, EncodedImage
from persam.errors import MissingExtraError
from persam.method.decoder import Prompt, PromptRecord, predict
from persam.method.matcher import (
    INPUT_SIZE,
    PATCH,
    MatcherReference,
    MatcherSettings,
    Matches,
    match_patches,
    prompt_points,
)
from persam.method.resample import upscale_logits

#: Prompts per decoder call (the authors' ``points_per_batch``).
CHUNK = 64


@dataclass
class Candidates:
    """Every kept mask of one photo, in non-maximum-suppression order.

    Attributes:
        low_res: (M, 4h, 4w) float32 logits. iou: (M,) predicted IoU.
        prompts: (M, k_i, 2) photo-pixel point sets, one per mask.
        cells: (M, 37 * 37) bool patch cells each mask touches (all when empty).
        inside: (M,) matched points inside each mask.
        decoder_prompts: prompts decoded. decoder_calls: batched decoder calls.
    """

    low_res: torch.Tensor
    iou: torch.Tensor
    prompts: list[torch.Tensor]
    cells: torch.Tensor
    inside: torch.Tensor
    decoder_prompts: int = 0
    decoder_calls: int = 0
    notes: list[str] = field(default_factory=list)


def to_photo(points: np.ndarray, original_hw: tuple[int, int]) -> torch.Tensor:
    """(..., 2) points of the 518 frame -> float32 photo pixels (x W / 518, y H / 518)."""
    h, w = original_hw
    scale = torch.tensor([w / INPUT_SIZE, h / INPUT_SIZE], dtype=torch.float64)
    return (torch.as_tensor(points, dtype=torch.float64) * scale).float()


def stability(logits: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score of (B, H, W) logits at threshold 0: area(> offset) / area(> -offset)."""
    inter = (logits > offset).sum((-1, -2), dtype=torch.int64)
    union = (logits > -offset).sum((-1, -2), dtype=torch.int64)
    return inter.float() / union.float().clamp_min(1)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(B, 4) float XYXY inclusive pixel boxes of (B, H, W) bool masks; [0, 0, 0, 0] for an empty one."""
    b, h, w = masks.shape
    cols, rows = masks.any(1), masks.any(2)
    xs, ys = torch.arange(w).expand(b, w), torch.arange(h).expand(b, h)
    x0 = torch.where(cols, xs, w).min(1).values
    x1 = torch.where(cols, xs, -1).max(1).values
    y0 = torch.where(rows, ys, h).min(1).values
    y1 = torch.where(rows, ys, -1).max(1).values
    box = torch.stack([x0, y0, x1, y1], 1)
    return torch.where(cols.any(1, keepdim=True), box, 0).float()


def area_overlap(n: int, side: int) -> torch.Tensor:
    """(side, n) bool: source pixels with weight in each output cell of OpenCV's area resize (n >= side).

    Cell j spans [j s, (j + 1) s), s = n / side; a partly covered pixel at
    either end counts when its overlap exceeds 1e-3 (OpenCV's ``computeResizeAreaTab``).
    """
    scale = n / side
    out = torch.zeros(side, n, dtype=torch.bool)
    for j in range(side):
        lo, hi = j * scale, (j + 1) * scale
        first, last = math.ceil(lo), math.floor(hi)
        out[j, first:last] = True
        if first - lo > 1e-3:
            out[j, first - 1] = True
        if hi - last > 1e-3 and last < n:
            out[j, last] = True
    return out


def mask_cells(masks: torch.Tensor) -> torch.Tensor:
    """(B, 37 * 37) bool: patches with mask pixels under OpenCV's area resize (> 0); all of them when empty."""
    side = INPUT_SIZE // PATCH
    _, h, w = masks.shape
    rows, cols = area_overlap(h, side).float(), area_overlap(w, side).float()
    cells = (torch.einsum("ih,bhw,jw->bij", rows, masks.float(), cols) > 0).reshape(len(masks), -1)
    empty = ~cells.any(1)
    cells[empty] = True
    return cells


def decode_candidates(
    backend: Backend,
    encoded: EncodedImage,
    samples: list[np.ndarray],
    matched: np.ndarray,
    settings: MatcherSettings,
) -> Candidates:
    """SAM's masks for every sampled point set (batched), filtered and ordered as the authors' generator.

    Args:
        backend: the frozen SAM. encoded: the photo's embedding.
        samples: (M_k, k, 2) point sets of the 518 frame, one array per size k.
        matched: (P, 2) all matched points (518 frame), for purity and coverage.
        settings: the filters.
    """
    from torchvision.ops import batched_nms

    geometry = encoded.geometry
    h, w = geometry.original_hw
    pts = (matched * np.array([w / INPUT_SIZE, h / INPUT_SIZE])).astype(np.int64)  # ``astype(int)``: truncation
    px, py = np.clip(pts[:, 0], 0, w - 1), np.clip(pts[:, 1], 0, h - 1)
    parts: dict[str, list] = {k: [] for k in ("keep", "low", "iou", "prompt", "cells", "inside", "box")}
    calls = total = 0
    for group in samples:
        photo_pts = to_photo(group, (h, w))
        for start in range(0, len(photo_pts), CHUNK):
            chunk = photo_pts[start : start + CHUNK]
            coords = geometry.to_model_xy(chunk.to(backend.device))
            labels = torch.ones(chunk.shape[:2], dtype=torch.int, device=backend.device)
            with torch.inference_mode():
                out = predict(backend, encoded, (coords, labels), None, None, settings.multimask)
            calls, total = calls + 1, total + len(chunk)
            k = out.logits.shape[1]
            low, iou = out.logits.flatten(0, 1).float().cpu(), out.iou.flatten(0, 1).float().cpu()
            keep = torch.ones(len(low), dtype=torch.bool)
            if settings.iou_filter > 0:
                keep &= iou > settings.iou_filter
            full = upscale_logits(low, geometry)
            if settings.stability_filter > 0:
                keep &= stability(full) >= settings.stability_filter
            masks = full > 0
            parts["keep"].append(keep)
            parts["low"].append(low)
            parts["iou"].append(iou)
            parts["prompt"] += list(chunk.repeat_interleave(k, 0))
            parts["cells"].append(mask_cells(masks))
            parts["inside"].append(masks[:, py, px].sum(1))
            parts["box"].append(mask_boxes(masks))
    keep, notes = torch.cat(parts["keep"]), []
    if not bool(keep.any()):  # the authors' code crashes here (no mask to concatenate)
        keep[:] = True
        notes.append("no mask passed the predicted-IoU / stability filters; all were scored")
    kept = keep.nonzero()[:, 0]
    iou, boxes = torch.cat(parts["iou"])[kept], torch.cat(parts["box"])[kept]
    order = kept[batched_nms(boxes, iou, torch.zeros(len(iou)), iou_threshold=settings.box_nms)]
    return Candidates(
        low_res=torch.cat(parts["low"])[order],
        iou=torch.cat(parts["iou"])[order],
        prompts=[parts["prompt"][i] for i in order.tolist()],
        cells=torch.cat(parts["cells"])[order],
        inside=torch.cat(parts["inside"])[order],
        decoder_prompts=total,
        decoder_calls=calls,
        notes=notes,
    )


def transport_cost(cost: np.ndarray) -> float:
    """Exact optimal transport cost of an (n, m) float64 cost matrix between uniform weights 1/n and 1/m.

    With n == m the transport polytope's vertices are the permutations scaled
    by 1/n (Birkhoff), so the optimum is an assignment problem: scipy's
    ``linear_sum_assignment`` finds it, several times faster than the network
    simplex, and its cost is the mean of the assigned costs. Otherwise POT's
    network simplex (``ot.emd2``, its default iteration limit), as the authors.
    """
    from scipy.optimize import linear_sum_assignment

    n, m = cost.shape
    if n == m:
        rows, cols = linear_sum_assignment(cost)
        return float(cost[rows, cols].sum() / n)
    import ot

    return float(ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost))


def emd_scores(similarity: torch.Tensor, pooled: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """(M,) float32 1 - exact transport cost, reference cells -> each mask's cells, cost (1 - S) / 2.

    Masks with the same cells pose the same problem and are solved once; the
    distinct problems run on ``torch.get_num_threads()`` threads (the solvers
    release the GIL; each problem is solved alone, so the order changes nothing).
    """
    try:
        import ot  # noqa: F401
        import scipy  # noqa: F401
    except ImportError:
        raise MissingExtraError("the matcher prior needs scipy and POT; pip install 'persam[matcher]'") from None
    from concurrent.futures import ThreadPoolExecutor

    # float32 as the authors' cost, then float64 once (what the solver converts each problem to)
    cost = ((1 - similarity) / 2)[pooled.to(similarity.device)].cpu().numpy().astype(np.float64)
    keys = [c.numpy().tobytes() for c in cells]
    first: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    problems = [cost[:, cells[i].numpy()] for i in first.values()]
    workers = min(torch.get_num_threads(), len(problems))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            solved = list(pool.map(transport_cost, problems))
    else:
        solved = [transport_cost(p) for p in problems]
    by_key = dict(zip(first, solved))
    return torch.tensor([1 - by_key[key] for key in keys], dtype=torch.float32)


@dataclass
class Selection:
    """The merged masks: indices into ``Candidates`` (best first) and every candidate's scores."""

    chosen: list[int]
    scores: torch.Tensor
    emd: torch.Tensor
    purity: torch.Tensor
    coverage: torch.Tensor


def select(cands: Candidates, matches: Matches, pooled: torch.Tensor, settings: MatcherSettings) -> Selection:
    """Instance-level matching: score every candidate, filter, and choose the masks to merge."""
    n_points = len(matches.points)
    emd = emd_scores(matches.similarity, pooled, cands.cells)
    area = cands.cells.sum(1).clamp_min(1).double()
    purity = (cands.inside.double() / area).float() + 1e-6
    coverage = (cands.inside.double() / n_points).float() + 1e-6
    scores = settings.alpha * emd + settings.beta * purity * coverage**settings.exp
    metrics = {"emd": emd, "purity": purity, "coverage": coverage}
    idx = torch.arange(len(scores))
    for name in ("coverage", "emd", "purity"):
        limit = getattr(settings, f"{name}_filter")
        if limit > 0:
            keep = torch.where(metrics[name][idx] >= min(limit, float(metrics[name][idx].max())))[0]
            idx = idx[keep]
    s = scores[idx]
    if settings.use_score_filter:
        dist, rank = torch.sort(1 - s, descending=False)
        norm = (dist - dist.min()) / (dist.max() + 1e-6)
        ok = dist < settings.score
        ok[0] = True
        chosen = idx[rank[ok & (norm < settings.score_norm)][: settings.num_merging_mask]]
    else:
        top = s.topk(min(settings.num_merging_mask, len(s)))[1]
        top_scores = s[top]
        ok = top_scores > settings.topk_scores_threshold
        if settings.topk_scores_threshold > 0:
            best = float(top_scores.max())
            # best <= 0 (every transport cost 1) would divide by it (the authors' code): keep the best mask.
            ok = top_scores / best > settings.topk_scores_threshold if best > 0 else torch.arange(len(top)) == 0
        chosen = idx[top[ok]]
    return Selection(chosen.tolist(), scores, emd, purity, coverage)


@dataclass
class MatcherOutput:
    """Matcher's answer on one photo.

    Attributes:
        mask: (H, W) bool union of the merged masks (photo pixels).
        low_res_logits: (4h, 4w) element-wise max of the merged masks' logits.
        score: predicted IoU of the best-scored merged mask.
        points_xy: (P', 2) int64 prompt points (centres or matched points), photo pixels.
        prompts: the merged masks' point sets (photo pixels), best first.
        candidates: masks scored. merged: masks in the union.
        decoder_prompts, decoder_calls: SAM decoder work on this photo.
        notes: anything off the authors' path.
    """

    mask: torch.Tensor
    low_res_logits: torch.Tensor
    score: float
    points_xy: torch.Tensor
    prompts: list[PromptRecord]
    candidates: int
    merged: int
    decoder_prompts: int
    decoder_calls: int
    notes: list[str] = field(default_factory=list)


def merge(cands: Candidates, chosen: list[int], encoded: EncodedImage, prompt_points: np.ndarray) -> MatcherOutput:
    """The union of the chosen masks at photo resolution, with its prompts."""
    low = cands.low_res[chosen]
    mask = (upscale_logits(low, encoded.geometry) > 0).any(0)
    ones = [torch.ones(len(cands.prompts[i]), dtype=torch.int64) for i in chosen]
    records = [PromptRecord.of(Prompt(points_xy=cands.prompts[i], labels=o)) for i, o in zip(chosen, ones)]
    return MatcherOutput(
        mask=mask,
        low_res_logits=low.max(0).values,
        score=float(cands.iou[chosen[0]]),
        points_xy=torch.from_numpy(to_photo(prompt_points, encoded.geometry.original_hw).numpy().astype(np.int64)),
        prompts=records,
        candidates=len(cands.iou),
        merged=len(chosen),
        decoder_prompts=cands.decoder_prompts,
        decoder_calls=cands.decoder_calls,
        notes=list(cands.notes),
    )


def segment_matcher(
    backend: Backend,
    encoded: EncodedImage,
    reference: MatcherReference,
    target: torch.Tensor,
    settings: MatcherSettings,
) -> MatcherOutput:
    """The Matcher prior on one photo: patch matching, prompt sampling, SAM's masks, instance-level choice.

    Args:
        backend: the frozen SAM. encoded: the photo's SAM embedding.
        reference: the concept's DINOv2 reference patches and cells.
        target: (37 * 37, C) unit DINOv2 features of the photo.
        settings: Matcher's knobs (defaults: the one-shot FSS-1000 setting).
    """
    matches = match_patches(reference, target)
    points, samples = prompt_points(matches, settings)
    cands = decode_candidates(backend, encoded, samples, matches.points, settings)
    chosen = select(cands, matches, reference.pooled, settings)
    out = merge(cands, chosen.chosen, encoded, points)
    if not matches.kept_reverse:
        out.notes.append("no reverse match fell inside the reference mask; every forward match was kept")
    if not bool(out.mask.any()):
        out.notes.append("the merged masks are empty")
    return out
