"""The part-aware prior (P2SAM, Zhao et al. 2024) on top of PerSAM.

The reference object is split into parts by k-means over its raw feature
cells; each part gives a positive point, and several part counts are tried:
each count's prompts run PerSAM's guided pass and refinement, and the count
whose final mask's cells are distributed most like the reference's cells
(exact optimal transport, squared-Euclidean cost) wins.

Work done once per concept (``build_part_prior``): the reference cells (the
authors' rule, ``part_cells``), the prototypes of every part count, and the
target embedding. Work per photo (``segment_parts``): one decoder call per
pass for all counts (``decode_many`` / ``refine``) and one transport problem
per count on the 64x64 grid's cells.

Conventions: masks (H, W) bool in photo pixels; points (x, y) photo pixels;
feature cells (N, C) in row-major grid order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from persam.backends.base import Backend, EncodedImage, ImageGeometry
from persam.errors import InputError, MissingExtraError
from persam.method.decoder import Guidance, Prompt, PromptRecord, decode
from persam.method.prior import positive_point
from persam.method.refine import MethodOutput, refine
from persam.method.resample import similarity_operator
from persam.method.settings import DEFAULT_PARTS, PersamSettings, check_parts
from persam.method.target import MASK_VALUE, attention_guidance, cell_features

#: The published PerSeg setting: one to five parts.


def part_cells(mask: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """The reference cells of the authors' code: (h, w) bool.

    The 0/1 mask, drawn as ``MASK_VALUE``, is resized like the image (PIL
    bilinear on uint8), zero-padded to the encoder frame, centred by
    subtracting (max + min) / 2 of the padded mask, and sampled at each cell
    by a bilinear resize without antialiasing; a cell is in when its sample
    is > 0 (the mask covers more than half of the cell's centre).

    Args:
        mask: (H, W) bool mask in photo pixels.
        geometry: the photo's geometry for the backend.
    """
    rh, rw = geometry.resized_hw
    drawn = Image.fromarray(mask.cpu().numpy().astype(np.uint8) * MASK_VALUE)
    resized = torch.from_numpy(np.asarray(drawn.resize((rw, rh), Image.BILINEAR), dtype=np.float32))
    s = geometry.input_size
    frame = torch.zeros((s, s), dtype=torch.float32)
    frame[:rh, :rw] = resized
    frame = frame - (frame.max() + frame.min()) / 2
    return F.interpolate(frame[None, None], size=geometry.grid_hw, mode="bilinear", align_corners=False)[0, 0] > 0


def kmeans_prototypes(cells: torch.Tensor, n: int) -> torch.Tensor:
    """(n, C) unit prototypes: k-means (scikit-learn, seed 0, ten initialisations) on the raw cells.

    Each prototype is the mean of its cluster's raw features, L2-normalised.
    ``n = 1`` is the normalised mean of all cells (PerSAM's direction).

    Args:
        cells: (N, C) raw float32 features, N >= n.
    """
    if n == 1:
        mean = cells.mean(0, keepdim=True)
        return mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise MissingExtraError(
            "the part-aware prior needs scikit-learn and POT; pip install 'persam[parts]'"
        ) from None
    data = cells.detach().float().cpu().numpy()
    labels = torch.from_numpy(KMeans(n_clusters=n, random_state=0, n_init=10).fit(data).labels_.astype(np.int64))
    raw = torch.stack([cells.cpu()[labels == k].mean(0) for k in range(n)])
    return (raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-12)).to(cells.device)


@dataclass
class PartPrior:
    """Everything the part-aware prior needs from the references, computed once per concept.

    Attributes:
        cells: (N, C) raw features of the reference cells of all references
            (``A``, the transport problem's source).
        prototypes: part count -> (n, C) unit prototypes, for every count of
            ``parts`` that the cells allow (in increasing order).
        parts: the requested (min, max) part counts.
        skipped: counts of ``parts`` with fewer cells than parts (k-means cannot run).
    """

    cells: torch.Tensor
    prototypes: dict[int, torch.Tensor]
    parts: tuple[int, int] = DEFAULT_PARTS
    skipped: tuple[int, ...] = ()

    @property
    def target_embedding(self) -> torch.Tensor:
        """(C,) raw mean of the cells (target-semantic prompting)."""
        return self.cells.mean(0)


def build_part_prior(feature_sets: list[torch.Tensor], parts: tuple[int, int] = DEFAULT_PARTS) -> PartPrior:
    """Cluster the reference cells of all references for every part count.

    Args:
        feature_sets: (n_i, C) raw features of each reference's ``part_cells``.
        parts: (min, max) part counts.

    Raises:
        ValueError: every requested count exceeds the number of cells.
    """
    lo, hi = check_parts(parts)
    cells = torch.cat(feature_sets, dim=0).float()
    counts = [n for n in range(lo, hi + 1) if n <= cells.shape[0]]
    if not counts:
        raise InputError(
            f"the reference mask covers {cells.shape[0]} feature cells, fewer than {lo} parts; "
            f"draw a larger mask or ask for fewer parts"
        )
    return PartPrior(
        cells=cells,
        prototypes={n: kmeans_prototypes(cells, n) for n in counts},
        parts=(lo, hi),
        skipped=tuple(n for n in range(lo, hi + 1) if n > cells.shape[0]),
    )


@dataclass(frozen=True)
class PartScore:
    """One part count's candidate on one photo.

    Attributes:
        parts: the part count.
        transport: squared 2-Wasserstein distance between the reference cells
            and the cells the candidate's mask covers, or None when the mask
            covers no cell (the candidate cannot win).
    """

    parts: int
    transport: float | None

    def to_dict(self) -> dict[str, object]:
        return {"parts": self.parts, "transport": self.transport}


@dataclass
class PartsOutput:
    """The part-aware prior's answer on one photo.

    Attributes:
        output: the chosen candidate's mask, points and prompts.
        parts: the chosen part count.
        candidates: every count's transport score, in increasing count.
        transport_s: wall time spent on the transport problems (for ``persam bench``).
    """

    output: MethodOutput
    parts: int
    candidates: list[PartScore] = field(default_factory=list)
    transport_s: float = 0.0


def transport_cost(source: torch.Tensor, target: torch.Tensor) -> float:
    """Exact optimal-transport cost between two uniform point clouds, squared-Euclidean ground cost.

    Args:
        source: (N, C) features. target: (M, C) features.

    Returns:
        The squared 2-Wasserstein distance (POT's ``emd2``, not square-rooted).
    """
    import ot

    a = source.detach().cpu().numpy().astype(np.float64)
    b = target.detach().cpu().numpy().astype(np.float64)
    weights_a = np.full(a.shape[0], 1.0 / a.shape[0])
    weights_b = np.full(b.shape[0], 1.0 / b.shape[0])
    return float(ot.emd2(weights_a, weights_b, ot.dist(a, b), numItermax=10_000_000))


def mask_cells(low_res_logits: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(h, w) bool: cells whose bilinear sample (no antialias) of the (4h, 4w) logits is > 0."""
    small = F.interpolate(
        low_res_logits[None, None].float(), size=geometry.grid_hw, mode="bilinear", align_corners=False
    )
    return small[0, 0] > 0


def part_prompt(
    encoded: EncodedImage, prototypes: torch.Tensor, settings: PersamSettings
) -> tuple[Prompt, Guidance | None, torch.Tensor]:
    """One count's prompt: a positive point per prototype, a negative point, the guidance.

    Args:
        encoded: the photo.
        prototypes: (n, C) unit prototypes.
        settings: PerSAM's components (negative point, guided attention).

    Returns:
        The prompt (points [1]*n + [0]), the attention guidance (None when
        switched off; the target embedding is added by the caller) and the
        (h, w) mean of the n similarity maps.
    """
    geometry = encoded.geometry
    sims = torch.einsum("nc,chw->nhw", prototypes.to(encoded.embedding.device), encoded.normalized_features())
    mean_map = sims.mean(0)
    pts = [positive_point(s, geometry) for s in sims]
    if settings.negative_point:
        pts.append(similarity_operator(geometry).argmax(mean_map, largest=False))
    labels = [1] * len(prototypes) + [0] * (len(pts) - len(prototypes))
    prompt = Prompt(points_xy=torch.tensor(pts, dtype=torch.float32), labels=torch.tensor(labels, dtype=torch.int64))
    bias = attention_guidance(mean_map, geometry) if settings.guided_attention else None
    return prompt, bias, mean_map


def segment_parts(backend: Backend, encoded: EncodedImage, prior: PartPrior, settings: PersamSettings) -> PartsOutput:
    """The part-aware prior on one photo: every count's PerSAM passes, then the transport choice.

    Each count's guided first pass is its own decoder call (its attention
    guidance is its own); the two refinement passes run all counts through
    ``refine`` (one ``decode_many`` call per pass; the decoder batches
    prompts with the same number of points). The count with the strictly
    smallest transport score wins (ties keep the smaller count); a count
    whose mask covers no cell cannot win; if none can, the smallest count is
    kept and ``notes`` says so.
    """
    target = prior.target_embedding if settings.semantic_prompt else None
    starts: list[MethodOutput] = []
    counts = sorted(prior.prototypes)
    for n in counts:
        prompt, bias, _ = part_prompt(encoded, prior.prototypes[n], settings)
        guidance = (
            Guidance(attention_bias=bias, target_embedding=target) if bias is not None or target is not None else None
        )
        first = decode(backend, encoded, prompt, multimask=False, guidance=guidance)
        starts.append(
            MethodOutput(
                first.low_res_logits[0],
                float(first.iou[0]),
                prompt.points_xy.long(),
                prompt.labels,
                prompts=[PromptRecord.of(prompt)],
                object_score=first.object_score,
            )
        )
    finals = refine(backend, encoded, starts, [None] * len(starts), box_first=False) if settings.refinement else starts
    scores: list[PartScore] = []
    best: int | None = None
    start = time.perf_counter()
    for i, (n, out) in enumerate(zip(counts, finals)):
        cells = mask_cells(out.low_res_logits, encoded.geometry)
        cost = transport_cost(prior.cells, cell_features(encoded, cells)) if bool(cells.any()) else None
        scores.append(PartScore(n, cost))
        if cost is not None and (best is None or cost < scores[best].transport):
            best = i
    transport_s = time.perf_counter() - start
    notes = [f"parts {n} skipped: the references cover fewer than {n} cells" for n in prior.skipped]
    if best is None:
        best = 0
        notes.append(f"no candidate's mask covers a feature cell; kept {counts[0]} part(s)")
    chosen = finals[best]
    chosen.notes = notes + chosen.notes
    return PartsOutput(output=chosen, parts=counts[best], candidates=scores, transport_s=transport_s)
