"""persam.jobs.synthetic: the one maker of synthetic photos and frames."""

from __future__ import annotations

import numpy as np
import pytest

from persam.jobs.synthetic import COLOURS, ellipse_r2, synthetic_clip_frame, synthetic_photo, tiled_photo, tiled_texture


def test_ellipse_r2_convention():
    r2 = ellipse_r2((20, 30), center_xy=(10, 5), axes_xy=(4, 2))
    assert r2.shape == (20, 30) and r2.dtype == np.float64
    assert r2[5, 10] == 0.0 and r2[5, 14] == 1.0 and r2[7, 10] == 1.0  # (x, y) = (14, 5) and (10, 7)
    assert r2[5, 15] > 1.0


def test_tiled_texture():
    a = tiled_texture((17, 23), np.random.default_rng(1), tile=4, low=70, high=90)
    assert a.shape == (17, 23, 3) and a.dtype == np.uint8 and 70 <= a.min() and a.max() < 90
    assert np.array_equal(a[:4, :4], np.broadcast_to(a[0, 0], (4, 4, 3)))  # one colour per tile
    assert np.array_equal(a, tiled_texture((17, 23), np.random.default_rng(1), tile=4, low=70, high=90))


def test_tiled_photo():
    image, mask = tiled_photo(60, 80, seed=3, center=(0.5, 0.25))
    assert image.shape == (60, 80, 3) and mask.shape == (60, 80) and mask.dtype == bool
    assert mask[30, 20] and not mask[30, 60]  # centre (y, x) = (0.5 h, 0.25 w)
    assert (image[mask] == (220, 30, 40)).all()
    again, _ = tiled_photo(60, 80, seed=3, center=(0.5, 0.25))
    assert np.array_equal(image, again) and not np.array_equal(image, tiled_photo(60, 80, seed=4)[0])


def test_synthetic_photo():
    image, mask = synthetic_photo(64, seed=0, center=(0.25, 0.5), axes=(0.1, 0.2))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and mask.shape == (48, 64)
    assert mask[24, 16] and not mask[24, 48]  # centre (x, y) = (0.25 w, 0.5 h)
    assert np.array_equal(image, synthetic_photo(64, seed=0, center=(0.25, 0.5), axes=(0.1, 0.2))[0])
    with pytest.raises(ValueError, match="at least 32"):
        synthetic_photo(31, seed=0)


def test_synthetic_clip_frame():
    frame, labels = synthetic_clip_frame(96, 3)
    later, later_labels = synthetic_clip_frame(96, 3, shift=8)
    assert frame.shape == (72, 96, 3) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    for oid in (1, 2, 3):
        assert (frame[labels == oid] == COLOURS[oid - 1]).all()
        assert np.nonzero(later_labels == oid)[1].min() == np.nonzero(labels == oid)[1].min() + 8
    with pytest.raises(ValueError):
        synthetic_clip_frame(96, 0)
