"""DAVIS 2017 semi-supervised metrics, as ``davis2017-evaluation`` computes them (pure numpy).

:func:`jaccard` and :func:`boundary_f` (F = ``.f``) per object and frame, :func:`db_statistics`
per object, :func:`summarize_davis` over objects. Masks are ``(H, W)``, nonzero = object.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from persam.errors import InputError
from persam.eval.common import BoolArray, FloatArray, as_mask, as_mask_pair, window_sum

#: Label value of "void" pixels in DAVIS annotations.
DAVIS_VOID_LABEL = 255


def _drop_void(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None) -> tuple[BoolArray, BoolArray]:
    """Both masks with the void pixels set to background."""
    p, g = as_mask_pair(pred, gt)
    if void is None:
        return p, g
    v = as_mask(void, "void")
    if v.shape != p.shape:
        raise ValueError(f"void has shape {v.shape} but the masks have shape {p.shape}; expected equal (H, W)")
    return p & ~v, g & ~v


def seg2bmap(seg: ArrayLike) -> BoolArray:
    """One-pixel-wide boundary map of an ``(H, W)`` mask (DAVIS ``seg2bmap``), ``(H, W)`` bool.

    A pixel is boundary when it differs from its right, lower or lower-right neighbour
    (zeros outside); the last row compares only to the right, the last column only to
    the bottom, and the bottom-right pixel is never boundary.
    """
    s0 = as_mask(seg, "seg")
    east, south, south_east = np.zeros_like(s0), np.zeros_like(s0), np.zeros_like(s0)
    east[:, :-1] = s0[:, 1:]
    south[:-1, :] = s0[1:, :]
    south_east[:-1, :-1] = s0[1:, 1:]
    b = (s0 ^ east) | (s0 ^ south) | (s0 ^ south_east)
    b[-1, :] = s0[-1, :] ^ east[-1, :]
    b[:, -1] = s0[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def disk_footprint(radius: int) -> BoolArray:
    """``(2r+1, 2r+1)`` disk ``{(x, y): x^2 + y^2 <= r^2}`` (as ``skimage.morphology.disk``)."""
    if radius < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    ax = np.arange(-radius, radius + 1)
    return ax[:, None] ** 2 + ax[None, :] ** 2 <= radius * radius


def dilate_disk(mask: ArrayLike, radius: int) -> BoolArray:
    """Exact dilation of an ``(H, W)`` mask by :func:`disk_footprint`, zeros outside; ``(H, W)`` bool.

    The disk is split into rows: offset ``dy`` spans half-width ``isqrt(r^2 - dy^2)``. Each
    distinct span is a 1-D running max (cumulative sum); shifted rows are OR-ed.
    """
    m = as_mask(mask, "mask")
    if radius < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    h, w = m.shape
    out = np.zeros_like(m)
    spans: dict[int, BoolArray] = {}
    for dy in range(-min(radius, h - 1), min(radius, h - 1) + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in spans:
            spans[half] = m if half == 0 else window_sum(m, min(half, w), axis=1) > 0
        if dy >= 0:  # out[y] |= span[y + dy]
            out[: h - dy] |= spans[half][dy:]
        else:
            out[-dy:] |= spans[half][: h + dy]
    return out


def boundary_tolerance(height: int, width: int, bound_th: float = 0.008) -> int:
    """Boundary tolerance ``ceil(bound_th * sqrt(h^2 + w^2))`` in pixels; ``bound_th >= 1`` is the radius."""
    if bound_th < 0:
        raise ValueError(f"bound_th must be >= 0, got {bound_th}")
    if bound_th >= 1:
        if not float(bound_th).is_integer():
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return int(math.ceil(bound_th * math.sqrt(height * height + width * width)))


def jaccard(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None = None) -> float:
    """DAVIS J of ``(H, W)`` masks: ``|P & G & ~V| / |(P | G) & ~V|``; 1.0 when that union is 0."""
    p, g = _drop_void(pred, gt, void)
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


@dataclass(frozen=True)
class BoundaryScore:
    """Boundary precision, recall and F-measure of one frame (fractions)."""

    precision: float
    recall: float
    f: float


def boundary_f(
    pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None = None, *, bound_th: float = 0.008, radius: int | None = None
) -> BoundaryScore:
    """DAVIS boundary measure: :func:`seg2bmap` boundaries matched within a disk tolerance.

    Args:
        pred: ``(H, W)`` predicted mask.
        gt: ``(H, W)`` ground-truth mask.
        void: Optional ``(H, W)`` void mask; both masks are zeroed there first.
        bound_th: Tolerance as a fraction of the diagonal, see :func:`boundary_tolerance`.
        radius: Explicit tolerance in pixels; overrides ``bound_th``.

    Returns:
        Precision, recall, F (0 when P + R = 0). Empty boundaries as in the reference:
        none predicted -> P=1, R=0; none in GT -> P=0, R=1; neither -> P=R=1.
    """
    p, g = _drop_void(pred, gt, void)
    r = boundary_tolerance(p.shape[0], p.shape[1], bound_th) if radius is None else radius
    pb, gb = seg2bmap(p), seg2bmap(g)
    n_pred, n_gt = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_pred == 0 or n_gt == 0:
        precision, recall = float(n_pred == 0), float(n_gt == 0)
    else:
        precision = np.count_nonzero(pb & dilate_disk(gb, r)) / n_pred
        recall = np.count_nonzero(gb & dilate_disk(pb, r)) / n_gt
    total = precision + recall
    return BoundaryScore(float(precision), float(recall), 0.0 if total == 0 else float(2 * precision * recall / total))


@dataclass(frozen=True)
class FrameStatistics:
    """Mean, recall (fraction of frames > 0.5) and decay of a per-frame measure."""

    mean: float
    recall: float
    decay: float


def db_statistics(values: ArrayLike) -> FrameStatistics:
    """Summarise per-frame values ``(n,)`` as DAVIS ``db_statistics``.

    ``mean = nanmean(v)``; ``recall = mean(v > 0.5)`` (NaN counts as a miss); with bin
    edges ``ids = round(linspace(1, n, 5) + 1e-10) - 1`` and ``bins[i] = v[ids[i]:ids[i+1]+1]``,
    ``decay = nanmean(bins[0]) - nanmean(bins[3])``. The reference casts ``ids`` to uint8;
    plain integers are used here (identical for ``n <= 256``).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("db_statistics needs at least one per-frame value, got an empty array")
    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean, decay = float(np.nanmean(v)), float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return FrameStatistics(mean=mean, recall=float(np.mean(v > 0.5)), decay=decay)


@dataclass(frozen=True)
class DavisObjectScore:
    """Per-frame J and F ``(n_frames,)`` of one DAVIS object, with their statistics."""

    sequence: str
    object_id: int
    j: FloatArray
    f: FloatArray
    j_stats: FrameStatistics
    f_stats: FrameStatistics

    @property
    def key(self) -> str:
        """Reference name ``"<sequence>_<object_id>"``, e.g. ``"bear_1"``."""
        return f"{self.sequence}_{self.object_id}"


def score_davis_sequence(
    sequence: str,
    gt_labels: ArrayLike,
    pred_labels: ArrayLike,
    *,
    skip_first_last: bool = True,
    ignore_void: bool = False,
    bound_th: float = 0.008,
) -> list[DavisObjectScore]:
    """Score one sequence of label maps as the semi-supervised DAVIS 2017 evaluation.

    K = largest label of the first GT frame (255 excluded); predicted ids absent score as
    empty masks, ids above K raise ``ValueError``. Skipped first/last frames are neither
    scored nor used to count predicted objects (their ``pred_labels`` may hold anything).

    Args:
        sequence: Sequence name, used in the object keys.
        gt_labels: ``(T, H, W)`` integer GT label maps; 255 marks void pixels.
        pred_labels: ``(T, H, W)`` integer predicted label maps aligned with ``gt_labels``.
        skip_first_last: Exclude the first and last frames (the reference does).
        ignore_void: Exclude void pixels from J and F. Default False as the reference
            semi-supervised evaluation, which passes no void mask (void = background).
        bound_th: Boundary tolerance, see :func:`boundary_tolerance`.

    Returns:
        One :class:`DavisObjectScore` per GT object id ``1..K``.
    """
    gt, pred = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt.ndim != 3 or pred.shape != gt.shape:
        raise InputError(
            f"sequence {sequence!r}: expected GT and prediction label stacks of equal shape "
            f"(T, H, W), got {gt.shape} and {pred.shape}"
        )
    void = gt == DAVIS_VOID_LABEL
    gt = np.where(void, 0, gt)
    num_objects = int(gt[0].max())
    frames = slice(1, -1) if skip_first_last else slice(None)
    gt, pred, void = gt[frames], pred[frames], void[frames]
    if gt.shape[0] == 0:
        raise InputError(
            f"sequence {sequence!r} has too few frames; at least 3 are needed when the first "
            "and last frames are excluded"
        )
    num_pred = int(pred.max())
    if num_pred > num_objects:
        raise InputError(
            f"sequence {sequence!r}: prediction contains object id {num_pred} but the first GT "
            f"frame has only {num_objects} objects (expected ids 0..{num_objects})"
        )
    scores = []
    for obj in range(1, num_objects + 1):
        j_vals, f_vals = np.empty(gt.shape[0]), np.empty(gt.shape[0])
        for t in range(gt.shape[0]):
            p, g, v = pred[t] == obj, gt[t] == obj, (void[t] if ignore_void else None)
            j_vals[t] = jaccard(p, g, v)
            f_vals[t] = boundary_f(p, g, v, bound_th=bound_th).f
        scores.append(DavisObjectScore(sequence, obj, j_vals, f_vals, db_statistics(j_vals), db_statistics(f_vals)))
    return scores


def _stats_dict(j: FrameStatistics, f: FrameStatistics) -> dict[str, float]:
    return {
        "J&F": (j.mean + f.mean) / 2,
        "J-Mean": j.mean,
        "J-Recall": j.recall,
        "J-Decay": j.decay,
        "F-Mean": f.mean,
        "F-Recall": f.recall,
        "F-Decay": f.decay,
    }


@dataclass(frozen=True)
class DavisReport:
    """DAVIS 2017 global results as fractions: means over all objects of all sequences."""

    objects: tuple[DavisObjectScore, ...]
    j: FrameStatistics
    f: FrameStatistics

    @property
    def jf_mean(self) -> float:
        """``(J-Mean + F-Mean) / 2``."""
        return (self.j.mean + self.f.mean) / 2

    def as_dict(self, per_object: bool = True) -> dict[str, float | dict[str, float]]:
        """``"J&F", "J-Mean", "J-Recall", "J-Decay", "F-*"``, plus ``"<seq>_<id>"`` -> same keys per object."""
        out: dict[str, float | dict[str, float]] = dict(_stats_dict(self.j, self.f))
        if per_object:
            out.update({o.key: _stats_dict(o.j_stats, o.f_stats) for o in self.objects})
        return out


def summarize_davis(objects: Iterable[DavisObjectScore]) -> DavisReport:
    """Average the per-object mean, recall and decay of J and F over all objects."""
    objs = tuple(objects)
    if not objs:
        raise InputError("no DAVIS objects to summarise; the first GT frames contain no object ids")

    def avg(stats: list[FrameStatistics]) -> FrameStatistics:
        return FrameStatistics(*(float(np.mean([getattr(s, k) for s in stats])) for k in ("mean", "recall", "decay")))

    return DavisReport(objs, avg([o.j_stats for o in objs]), avg([o.f_stats for o in objs]))
