"""Golden and cross-check tests for persam.eval.perseg_metrics and persam.eval.davis_metrics (IoU, bIoU, J&F)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from extras import require
from persam.eval.davis_metrics import (
    DavisObjectScore,
    FrameStatistics,
    boundary_f,
    boundary_tolerance,
    db_statistics,
    dilate_disk,
    disk_footprint,
    jaccard,
    score_davis_sequence,
    seg2bmap,
    summarize_davis,
)
from persam.eval.perseg_metrics import (
    PerSegImageCounts,
    boundary_dilation,
    boundary_iou,
    erode_square,
    mask_to_boundary,
    perseg_image_counts,
    score_perseg_object,
    summarize_perseg,
)


def grid(text: str) -> np.ndarray:
    """Parse a picture like '1 1 0 / 0 1 0' (rows separated by '/') into a bool array."""
    return np.array([[c == "1" for c in row.split()] for row in text.split("/")], dtype=bool)


def box(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[rows, cols] = True
    return m


SQUARE5 = box(5, 5, slice(1, 4), slice(1, 4))  # 3x3 square centred in a 5x5 image
FULL5 = np.ones((5, 5), dtype=bool)
LEFT5 = box(5, 5, slice(0, 5), slice(0, 3))  # touches the top, left and bottom borders
RING5 = grid("0 0 0 0 0 / 0 1 1 1 0 / 0 1 0 1 0 / 0 1 1 1 0 / 0 0 0 0 0")
BORDER5 = grid("1 1 1 1 1 / 1 0 0 0 1 / 1 0 0 0 1 / 1 0 0 0 1 / 1 1 1 1 1")


# ----------------------------------------------------------------- erosion / bands


@pytest.mark.parametrize(
    ("mask", "k", "expected"),
    [
        (SQUARE5, 1, box(5, 5, slice(2, 3), slice(2, 3))),
        (FULL5, 1, box(5, 5, slice(1, 4), slice(1, 4))),  # zeros outside erode the border
        (FULL5, 2, box(5, 5, slice(2, 3), slice(2, 3))),
        (FULL5, 3, np.zeros((5, 5), dtype=bool)),
        (SQUARE5, 0, SQUARE5),
        (np.ones((1, 4), dtype=bool), 1, np.zeros((1, 4), dtype=bool)),
        (LEFT5, 1, box(5, 5, slice(1, 4), slice(1, 2))),
        (np.ones((3, 9), dtype=bool), 50, np.zeros((3, 9), dtype=bool)),
    ],
)
def test_erode_square_golden(mask: np.ndarray, k: int, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(erode_square(mask, k), expected)


def test_erode_square_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="iterations"):
        erode_square(SQUARE5, -1)
    with pytest.raises(ValueError, match="2-D"):
        erode_square(np.zeros((2, 3, 3)), 1)


@pytest.mark.parametrize(
    ("mask", "dilation", "expected"),
    [
        (np.zeros((5, 5), dtype=bool), None, np.zeros((5, 5), dtype=bool)),
        (box(5, 5, slice(2, 3), slice(2, 3)), None, box(5, 5, slice(2, 3), slice(2, 3))),  # one pixel
        (box(5, 5, slice(0, 1), slice(0, 1)), None, box(5, 5, slice(0, 1), slice(0, 1))),  # corner pixel
        (SQUARE5, None, RING5),
        (FULL5, None, BORDER5),  # touching the border -> band along the border
        (LEFT5, None, grid("1 1 1 0 0 / 1 0 1 0 0 / 1 0 1 0 0 / 1 0 1 0 0 / 1 1 1 0 0")),
        (np.ones((7, 7), dtype=bool), 2, ~box(7, 7, slice(2, 5), slice(2, 5))),
    ],
)
def test_mask_to_boundary_golden(mask: np.ndarray, dilation: int | None, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(mask_to_boundary(mask, dilation=dilation), expected)


@pytest.mark.parametrize(("h", "w", "d"), [(5, 5, 1), (1, 1, 1), (480, 854, 20), (2048, 2048, 58), (75, 100, 2)])
def test_boundary_dilation_values(h: int, w: int, d: int) -> None:
    assert boundary_dilation(h, w) == d


def test_boundary_dilation_matches_reference_formula() -> None:
    for h in range(1, 400, 7):
        for w in range(1, 600, 11):
            ref = max(int(round(0.02 * np.sqrt(h**2 + w**2))), 1)
            assert boundary_dilation(h, w) == ref


@pytest.mark.parametrize("seed", range(6))
def test_erosion_matches_scipy(seed: int) -> None:
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 60, size=2)
    mask = ndimage.binary_opening(rng.random((h, w)) > 0.3)  # blobby, not pure noise
    for k in (1, 2, 3, 5, 9):
        expected = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), iterations=k, border_value=0)
        np.testing.assert_array_equal(erode_square(mask, k), expected)
        min_filter = ndimage.minimum_filter(mask.astype(np.uint8), size=2 * k + 1, mode="constant", cval=0)
        np.testing.assert_array_equal(erode_square(mask, k), min_filter.astype(bool))


@pytest.mark.parametrize("seed", range(4))
def test_mask_to_boundary_matches_padded_reference(seed: int) -> None:
    """boundary-iou-api: pad one zero pixel, erode with a border that never erodes, crop."""
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(100 + seed)
    h, w = rng.integers(20, 160, size=2)
    mask = ndimage.binary_closing(rng.random((h, w)) > 0.45, iterations=2)
    d = boundary_dilation(h, w)
    padded = np.pad(mask, 1)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), iterations=d, border_value=1)[1:-1, 1:-1]
    np.testing.assert_array_equal(mask_to_boundary(mask), mask & ~eroded)


def test_mask_to_boundary_on_2048_equals_the_erosion() -> None:
    """A large, ragged mask (the size the old timing test used; speed belongs in benchmarks): the values."""
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(0)
    mask = np.zeros((2048, 2048), dtype=bool)
    mask[300:1700, 200:1900] = rng.random((1400, 1700)) > 0.05
    d = boundary_dilation(2048, 2048)
    padded = np.pad(mask, 1)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), iterations=d, border_value=1)[1:-1, 1:-1]
    np.testing.assert_array_equal(mask_to_boundary(mask), mask & ~eroded)


# ----------------------------------------------------------------- PerSeg IoU / bIoU


@pytest.mark.parametrize(
    ("pred", "gt", "counts"),
    [
        (SQUARE5, SQUARE5, (9, 9, 8, 8)),  # identical
        (box(5, 5, slice(0, 1), slice(0, 1)), box(5, 5, slice(4, 5), slice(4, 5)), (0, 2, 0, 2)),  # disjoint
        (np.zeros((5, 5)), np.zeros((5, 5)), (0, 0, 0, 0)),  # both empty
        (np.zeros((5, 5)), SQUARE5, (0, 9, 0, 8)),
        (box(5, 5, slice(2, 3), slice(2, 3)), SQUARE5, (1, 9, 0, 9)),  # one-pixel prediction
        (LEFT5, FULL5, (15, 25, 9, 19)),  # border bands: col 0 + 2 pixels on row 0 and row 4
    ],
)
def test_perseg_image_counts_golden(pred: np.ndarray, gt: np.ndarray, counts: tuple[int, int, int, int]) -> None:
    assert perseg_image_counts(pred, gt) == PerSegImageCounts(*counts)


def test_per_image_ious_empty_conventions() -> None:
    empty = perseg_image_counts(np.zeros((4, 4)), np.zeros((4, 4)))
    assert empty.iou == 1.0 and empty.boundary_iou == 1.0
    assert boundary_iou(LEFT5, FULL5) == pytest.approx(9 / 19)
    assert boundary_iou(np.zeros((5, 5)), SQUARE5) == 0.0


def test_perseg_aggregation_sums_then_divides() -> None:
    images = [perseg_image_counts(SQUARE5, SQUARE5), perseg_image_counts(np.zeros((5, 5)), SQUARE5)]
    a = score_perseg_object("cat", images)
    assert (a.num_images, a.intersection, a.union) == (2, 9, 18)
    assert a.iou == pytest.approx(50.0) and a.biou == pytest.approx(50.0)
    b = score_perseg_object("dog", [perseg_image_counts(LEFT5, FULL5)])
    assert b.iou == pytest.approx(60.0) and b.biou == pytest.approx(100 * 9 / 19)
    empty = score_perseg_object("ghost", [perseg_image_counts(np.zeros((3, 3)), np.zeros((3, 3)))])
    assert empty.iou == 0.0  # 0 / (0 + 1e-10), as the reference
    report = summarize_perseg([a, b])
    assert report.miou == pytest.approx(55.0)
    assert report.mbiou == pytest.approx((50 + 100 * 9 / 19) / 2)
    assert report.as_dict()["cat"] == {"IoU": pytest.approx(50.0), "bIoU": pytest.approx(50.0)}
    with pytest.raises(ValueError, match="no PerSeg objects"):
        summarize_perseg([])


def test_perseg_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        perseg_image_counts(np.zeros((4, 4)), np.zeros((4, 5)))


# ----------------------------------------------------------------- DAVIS boundaries


@pytest.mark.parametrize(
    ("seg", "expected"),
    [
        (grid("0 0 0 0 / 0 1 1 0 / 0 1 1 0 / 0 0 0 0"), grid("1 1 1 0 / 1 0 1 0 / 1 1 1 0 / 0 0 0 0")),
        (grid("1 0 0 / 0 0 0 / 0 0 0"), grid("1 0 0 / 0 0 0 / 0 0 0")),
        (grid("0 0 0 / 0 0 0 / 0 0 1"), grid("0 0 0 / 0 1 1 / 0 1 0")),
        (np.ones((3, 3), dtype=bool), np.zeros((3, 3), dtype=bool)),
        (np.zeros((3, 3), dtype=bool), np.zeros((3, 3), dtype=bool)),
        (grid("0 1 1 0"), grid("1 0 1 0")),
        (grid("1 1 0 0 0 0 / 1 1 0 0 0 0 / 1 1 0 0 0 0"), grid("0 1 0 0 0 0 / 0 1 0 0 0 0 / 0 1 0 0 0 0")),
    ],
)
def test_seg2bmap_golden(seg: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_disk_footprint_golden() -> None:
    np.testing.assert_array_equal(disk_footprint(0), [[True]])
    np.testing.assert_array_equal(disk_footprint(1), grid("0 1 0 / 1 1 1 / 0 1 0"))
    np.testing.assert_array_equal(disk_footprint(2), grid("0 0 1 0 0 / 0 1 1 1 0 / 1 1 1 1 1 / 0 1 1 1 0 / 0 0 1 0 0"))
    for r in range(8):
        ax = np.arange(-r, r + 1)
        brute = np.array([[x * x + y * y <= r * r for x in ax] for y in ax])
        np.testing.assert_array_equal(disk_footprint(r), brute)


def test_dilate_single_pixel_is_the_disk() -> None:
    mask = np.zeros((15, 15), dtype=bool)
    mask[7, 7] = True
    for r in range(6):
        expected = np.zeros_like(mask)
        expected[7 - r : 8 + r, 7 - r : 8 + r] = disk_footprint(r)
        np.testing.assert_array_equal(dilate_disk(mask, r), expected)


@pytest.mark.parametrize("seed", range(6))
def test_disk_dilation_matches_scipy(seed: int) -> None:
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 70, size=2)
    mask = rng.random((h, w)) > 0.97
    for r in (0, 1, 2, 3, 5, 8, 13, 40):
        expected = ndimage.binary_dilation(mask, structure=disk_footprint(r))
        np.testing.assert_array_equal(dilate_disk(mask, r), expected, err_msg=f"r={r}, shape={mask.shape}")


@pytest.mark.parametrize(
    ("h", "w", "th", "r"), [(480, 854, 0.008, 8), (3, 6, 0.008, 1), (1080, 1920, 0.008, 18), (10, 10, 3, 3)]
)
def test_boundary_tolerance(h: int, w: int, th: float, r: int) -> None:
    assert boundary_tolerance(h, w, th) == r


def test_boundary_tolerance_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="whole"):
        boundary_tolerance(10, 10, 2.5)
    with pytest.raises(ValueError, match=">= 0"):
        boundary_tolerance(10, 10, -0.1)


# F hand case (3x6): gt = columns 0-1 -> boundary = column 1 (3 px);
# pred = columns 0-2 on rows 0-1 -> boundary = (0,2), (1,0), (1,1), (1,2) (4 px).
F_GT = grid("1 1 0 0 0 0 / 1 1 0 0 0 0 / 1 1 0 0 0 0")
F_PRED = grid("1 1 1 0 0 0 / 1 1 1 0 0 0 / 0 0 0 0 0 0")


def test_boundary_f_hand_case_exact_radius() -> None:
    np.testing.assert_array_equal(seg2bmap(F_PRED), grid("0 0 1 0 0 0 / 1 1 1 0 0 0 / 0 0 0 0 0 0"))
    exact = boundary_f(F_PRED, F_GT, radius=0)  # only (1,1) matches: P = 1/4, R = 1/3
    assert (exact.precision, exact.recall) == pytest.approx((1 / 4, 1 / 3))
    assert exact.f == pytest.approx(2 / 7)
    assert boundary_f(F_PRED, F_GT, radius=1).f == pytest.approx(1.0)
    assert boundary_f(F_PRED, F_GT).f == pytest.approx(1.0)  # default tolerance is 1 px here
    assert boundary_f(F_PRED, F_GT, bound_th=1).f == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("pred", "gt", "p", "r", "f"),
    [
        (np.zeros((5, 5)), SQUARE5, 1.0, 0.0, 0.0),  # no predicted boundary
        (SQUARE5, np.zeros((5, 5)), 0.0, 1.0, 0.0),  # no GT boundary
        (np.zeros((5, 5)), np.zeros((5, 5)), 1.0, 1.0, 1.0),
        (FULL5, FULL5, 1.0, 1.0, 1.0),  # full masks have no seg2bmap boundary
        (SQUARE5, SQUARE5, 1.0, 1.0, 1.0),
        (box(9, 9, slice(0, 2), slice(0, 2)), box(9, 9, slice(6, 8), slice(6, 8)), 0.0, 0.0, 0.0),  # far apart
    ],
)
def test_boundary_f_conventions(pred: np.ndarray, gt: np.ndarray, p: float, r: float, f: float) -> None:
    score = boundary_f(pred, gt, radius=1)
    assert (score.precision, score.recall, score.f) == pytest.approx((p, r, f))


def _reference_f(pred: np.ndarray, gt: np.ndarray, r: int) -> float:
    """Straightforward DAVIS f_measure using scipy's dilation (test-only reference)."""
    from scipy import ndimage

    pb, gb = seg2bmap(pred), seg2bmap(gt)
    disk = disk_footprint(r)
    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 or n_g == 0:
        prec, rec = float(n_p == 0), float(n_g == 0)
    else:
        prec = (pb & ndimage.binary_dilation(gb, disk)).sum() / n_p
        rec = (gb & ndimage.binary_dilation(pb, disk)).sum() / n_g
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("seed", range(5))
def test_boundary_f_matches_scipy_reference(seed: int) -> None:
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(seed)
    gt = ndimage.binary_opening(rng.random((48, 64)) > 0.4, iterations=2)
    pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 3))) ^ (rng.random((48, 64)) > 0.97)
    for r in (0, 1, 2, 4):
        assert boundary_f(pred, gt, radius=r).f == pytest.approx(_reference_f(pred, gt, r), abs=1e-12)


@pytest.mark.parametrize(
    ("pred", "gt", "j"),
    [
        (np.zeros((4, 4)), np.zeros((4, 4)), 1.0),
        (SQUARE5, SQUARE5, 1.0),
        (box(5, 5, slice(0, 1), slice(0, 1)), SQUARE5, 0.0),
        (box(4, 4, slice(0, 2), slice(0, 4)), box(4, 4, slice(0, 4), slice(0, 2)), 4 / 12),
    ],
)
def test_jaccard_golden(pred: np.ndarray, gt: np.ndarray, j: float) -> None:
    assert jaccard(pred, gt) == pytest.approx(j)


def test_void_pixels_are_excluded() -> None:
    gt = box(4, 4, slice(0, 2), slice(0, 2))
    void = box(4, 4, slice(0, 2), slice(2, 4))
    pred = box(4, 4, slice(0, 2), slice(0, 4))  # gt plus the void area
    assert jaccard(pred, gt) == pytest.approx(0.5)
    assert jaccard(pred, gt, void) == 1.0
    assert boundary_f(pred, gt, void, radius=0).f == 1.0
    assert jaccard(void, np.zeros((4, 4)), void) == 1.0  # nothing left outside the void


# ----------------------------------------------------------------- DAVIS statistics


@pytest.mark.parametrize(
    ("values", "mean", "recall", "decay"),
    [
        # n=6: bin edges [0, 1, 3, 4, 5]; bins [1, .8] and [.2, 0]
        ([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], 0.5, 0.5, 0.9 - 0.1),
        # n=4: edges [0, 1, 2, 2, 3] (2.5 rounds up thanks to +1e-10); NaN ignored by means,
        # counted as a miss by the recall
        ([np.nan, 1.0, 0.0, 1.0], 2 / 3, 0.5, 1.0 - 0.5),
        ([0.7], 0.7, 1.0, 0.0),
        ([0.5, 0.5], 0.5, 0.0, 0.0),  # recall is strictly > 0.5
        ([1.0, 0.0], 0.5, 0.5, 1.0),  # n=2: edges [0, 0, 1, 1, 1] -> bins [1] and [0]
    ],
)
def test_db_statistics_golden(values: list[float], mean: float, recall: float, decay: float) -> None:
    assert db_statistics(values) == FrameStatistics(pytest.approx(mean), pytest.approx(recall), pytest.approx(decay))


def test_db_statistics_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        db_statistics([])


def _stack(*frames: np.ndarray) -> np.ndarray:
    return np.stack([f.astype(np.uint8) for f in frames])


def _two_objects(t: int) -> np.ndarray:
    labels = np.zeros((8, 10), dtype=np.uint8)
    labels[1:4, 1 + t % 2 : 4 + t % 2] = 1
    labels[5:8, 6:9] = 2
    return labels


def test_score_sequence_perfect_and_missing_object() -> None:
    gt = _stack(*[_two_objects(t) for t in range(5)])
    perfect = score_davis_sequence("bear", gt, gt)
    assert [o.key for o in perfect] == ["bear_1", "bear_2"]
    for obj in perfect:
        assert obj.j.shape == (3,) and np.all(obj.j == 1) and np.all(obj.f == 1)
        assert obj.j_stats == FrameStatistics(1.0, 1.0, 0.0)
    only_first = np.where(gt == 2, 0, gt)
    scores = score_davis_sequence("bear", gt, only_first)
    assert np.all(scores[0].j == 1)
    assert np.all(scores[1].j == 0) and np.all(scores[1].f == 0)  # padded with empty masks


def test_score_sequence_object_count_rules() -> None:
    gt = _stack(*[_two_objects(t) for t in range(4)])
    extra = gt.copy()
    extra[1, 0, 0] = 3
    with pytest.raises(ValueError, match="object id 3"):
        score_davis_sequence("bear", gt, extra)
    ignored = gt.copy()
    ignored[0, 0, 0] = ignored[-1, 0, 0] = 3  # first/last frames are not read
    assert len(score_davis_sequence("bear", gt, ignored)) == 2
    with pytest.raises(ValueError, match="at least 3"):
        score_davis_sequence("bear", gt[:2], gt[:2])
    with pytest.raises(ValueError, match="equal shape"):
        score_davis_sequence("bear", gt, gt[:, :, :5])


def test_score_sequence_void_handling() -> None:
    frame = np.zeros((4, 4), dtype=np.uint8)
    frame[0:2, 0:2] = 1
    frame[0:2, 2:4] = 255
    gt = _stack(frame, frame, frame)
    pred = _stack(*[np.where(frame > 0, 1, 0)] * 3)
    assert score_davis_sequence("s", gt, pred)[0].j[0] == pytest.approx(0.5)  # reference: void = background
    assert score_davis_sequence("s", gt, pred, ignore_void=True)[0].j[0] == 1.0
    void_first = frame.copy()
    void_first[3, 3] = 255
    assert len(score_davis_sequence("s", _stack(void_first, frame, frame), pred)) == 1  # 255 is not an object


def _object(seq: str, oid: int, j: list[float], f: list[float]) -> DavisObjectScore:
    return DavisObjectScore(seq, oid, np.array(j), np.array(f), db_statistics(j), db_statistics(f))


def test_summarize_davis_and_dict() -> None:
    a = _object("bear", 1, [1.0, 1.0, 1.0], [1.0, 0.8, 0.6])
    b = _object("dog", 1, [0.6, 0.4, 0.2], [0.0, 0.0, 0.0])
    report = summarize_davis([a, b])
    assert report.j.mean == pytest.approx(0.7)
    assert report.j.recall == pytest.approx((1 + 1 / 3) / 2)
    assert report.j.decay == pytest.approx((0 + 0.3) / 2)  # n=3: bins [v0, v1] and [v2]
    assert report.f.mean == pytest.approx(0.4)
    assert report.jf_mean == pytest.approx(0.55)
    d = report.as_dict()
    assert list(d)[:7] == ["J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert d["J&F"] == pytest.approx(0.55)
    assert d["bear_1"]["F-Mean"] == pytest.approx(0.8)
    assert d["dog_1"]["J&F"] == pytest.approx(0.2)
    assert "bear_1" not in report.as_dict(per_object=False)
    with pytest.raises(ValueError, match="no DAVIS objects"):
        summarize_davis([])


def test_davis_tolerance_uses_reference_diagonal() -> None:
    assert boundary_tolerance(480, 854) == math.ceil(0.008 * np.linalg.norm((480, 854)))
