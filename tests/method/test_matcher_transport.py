"""The matcher prior's transport scoring equals POT's exact network simplex (``ot.emd2``) on random problems.

``transport_cost`` takes an assignment solver for equal sizes and the network
simplex otherwise; ``emd_scores`` solves each distinct problem once, on
threads. Both must give the exact optimum: compared with ``ot.emd2`` on the
same float64 costs, within 1e-6 (the costs are in [0, 1]; float rounding of
two exact optima differs by ~1e-15).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extras import require

require("ot")
require("scipy")

import ot  # noqa: E402

from persam.method.matcher_select import emd_scores, transport_cost  # noqa: E402

TOL = 1e-6


def exact(cost: np.ndarray) -> float:
    n, m = cost.shape
    return float(ot.emd2([1.0 / n] * n, [1.0 / m] * m, cost))


@pytest.mark.parametrize("n, m", [(1, 1), (1, 9), (7, 1), (5, 5), (40, 40), (120, 120), (30, 70), (90, 45)])
def test_transport_cost_is_the_exact_optimum(n, m):
    rng = np.random.default_rng(n * 1000 + m)
    for trial in range(3):
        cost = rng.random((n, m))
        if trial == 2:  # ties: a few cost levels only
            cost = np.round(cost * 4) / 4
        assert abs(transport_cost(cost) - exact(cost)) <= TOL


def test_equal_sizes_are_not_a_mere_row_minimum():
    # a cost whose row minima share one column: an assignment must spread, as transport does
    cost = np.array([[0.0, 1.0, 1.0], [0.0, 0.5, 1.0], [0.0, 1.0, 0.2]])
    assert transport_cost(cost) == pytest.approx(exact(cost), abs=TOL)
    assert transport_cost(cost) > cost.min(1).mean() + 0.1


def test_emd_scores_match_one_exact_problem_per_mask():
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(37 * 37, 8), dim=1)
    similarity = feats[:200] @ feats.t()  # 200 reference patches x 1369 target patches
    pooled = torch.zeros(200, dtype=torch.bool)
    pooled[rng.choice(200, 60, replace=False)] = True
    cells = torch.from_numpy(rng.random((12, 37 * 37)) > 0.96)
    cells[3] = cells[7]  # a repeated problem
    cells[5] = False
    cells[5, rng.choice(37 * 37, 60, replace=False)] = True  # equal sizes: the assignment path
    cost = ((1 - similarity) / 2)[pooled].numpy().astype(np.float64)
    expected = torch.tensor([1 - exact(cost[:, c.numpy()]) for c in cells], dtype=torch.float32)
    got = emd_scores(similarity, pooled, cells)
    assert got.dtype == torch.float32 and got.shape == (12,)
    assert float((got - expected).abs().max()) <= TOL
    one = torch.set_num_threads, torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the serial path gives the same numbers
        assert torch.equal(emd_scores(similarity, pooled, cells), got)
    finally:
        one[0](one[1])
