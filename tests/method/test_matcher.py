"""The matcher prior's steps where the authors' code is undefined or crashes, and its small rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extras import require

require("ot")

from persam.errors import InputError, OptionsError  # noqa: E402
from persam.method.matcher import (  # noqa: E402
    MatcherSettings,
    cluster_points,
    colex_combinations,
    pool_reference,
    sample_prompts,
)
from persam.method.matcher_select import area_overlap, mask_boxes, mask_cells  # noqa: E402
from reference_oracle_matcher import combinations, inter_area_positive  # noqa: E402


@pytest.mark.parametrize(("n", "k"), [(8, 4), (8, 6), (5, 2), (3, 3), (6, 1)])
def test_subsets_in_the_authors_order(n, k):
    assert [list(c) for c in colex_combinations(n, k)] == combinations(n, k)


@pytest.mark.parametrize("hw", [(72, 96), (375, 500), (37, 37), (111, 74), (400, 333)])
def test_mask_cells_follow_opencv_area_rule(hw):
    rng = np.random.default_rng(hw[0])
    masks = rng.random((3, *hw)) > 0.995
    ours = mask_cells(torch.from_numpy(masks)).reshape(3, 37, 37).numpy()
    for m, o in zip(masks, ours):
        expected = inter_area_positive(m)
        expected = expected if expected.any() else np.ones_like(expected)
        np.testing.assert_array_equal(o, expected)


def test_empty_mask_covers_every_cell_and_has_a_zero_box():
    empty = torch.zeros(1, 50, 60, dtype=torch.bool)
    assert bool(mask_cells(empty).all())
    assert mask_boxes(empty).tolist() == [[0.0, 0.0, 0.0, 0.0]]
    one = empty.clone()
    one[0, 10:20, 5:9] = True
    assert mask_boxes(one).tolist() == [[5.0, 10.0, 8.0, 19.0]]
    assert area_overlap(74, 37).sum(1).tolist() == [2] * 37


def test_tiny_mask_keeps_its_own_cells():
    """The nearest 518 resize loses a one-pixel mask of a big photo; the authors then mark the centre square."""
    mask = torch.zeros(2000, 3000, dtype=torch.bool)
    mask[101, 2901] = True
    assert not bool(torch.nn.functional.interpolate(mask.float()[None, None], (518, 518), mode="nearest").any())
    cells = pool_reference(mask).reshape(37, 37)
    assert cells.sum() == 1 and bool(cells[101 * 37 // 2000, 2901 * 37 // 3000])
    with pytest.raises(InputError):
        pool_reference(torch.zeros(10, 10, dtype=torch.bool))


def test_duplicate_points_do_not_loop_for_ever():
    """Identical matched points leave k-means clusters empty for ever (the authors' loop never ends)."""
    pts = np.array([[7, 7]] * 5 + [[21, 7]] * 5)
    centres = cluster_points(pts, 8, torch.Generator().manual_seed(0))
    assert sorted(map(tuple, centres.tolist())) == [(7, 7), (21, 7)]


def test_sampler_sizes_and_seeded_random_subsets():
    import random

    settings = MatcherSettings(sample_range=(1, 3), max_sample_iterations=5)
    pts = np.arange(20).reshape(10, 2)
    a = sample_prompts(pts, settings, random.Random(0))
    b = sample_prompts(pts, settings, random.Random(0))
    assert [s.shape for s in a] == [(5, 1, 2), (5, 2, 2), (5, 3, 2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    few = sample_prompts(pts[:2], MatcherSettings(), random.Random(0))  # fewer points than the range's minimum
    assert [s.shape for s in few] == [(1, 2, 2)]
    with pytest.raises(OptionsError):
        MatcherSettings(sample_range=(0, 3))
