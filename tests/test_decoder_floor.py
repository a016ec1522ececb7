"""benchmarks/decoder_floor.py: its recorder sees the products a computation runs (also those reached
through composite operators) with the right arithmetic, and its replay runs them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def floor():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling decoder_workers.py
    try:
        spec = importlib.util.spec_from_file_location("decoder_floor", BENCHMARKS / "decoder_floor.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["decoder_floor"] = module  # its dataclass looks its module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("decoder_floor", None)
        sys.path.remove(str(BENCHMARKS))


def test_products_and_their_arithmetic(floor):
    x, w, b = torch.randn(5, 7), torch.randn(3, 7), torch.randn(3)
    a, c = torch.randn(4, 6, 8), torch.randn(4, 8, 2)
    image, kernel = torch.randn(1, 2, 8, 8), torch.randn(4, 2, 2, 2)
    with floor.recording() as (products, ops):
        F.linear(x, w, b)  # composite: runs addmm
        torch.matmul(a, c)  # composite: runs bmm
        F.conv2d(image, kernel, stride=2)
        torch.relu(x)
    names = [p.op.overloadpacket.__name__ for p in products]
    assert names == ["addmm", "bmm", "convolution"]
    assert [p.flops for p in products] == [2 * 5 * 3 * 7, 2 * 4 * 6 * 2 * 8, 2 * (4 * 4 * 4) * (2 * 2 * 2)]
    assert ops["relu"] == 1 and ops["addmm"] == 1
    assert products[1].args[0][1:3] == ((4, 6, 8), (48, 8, 1))  # shapes and strides kept


def test_replay_runs_the_recorded_products(floor):
    with floor.recording() as (products, _):
        torch.mm(torch.randn(3, 4), torch.randn(4, 5).t().contiguous().t())  # a transposed operand
        torch.randn(2, 3, 4).baddbmm_(torch.randn(2, 3, 6), torch.randn(2, 6, 4))
        torch.bmm(torch.randn(1, 3, 4).expand(2, 3, 4), torch.randn(2, 4, 5))  # an expanded operand
    assert [p.op.overloadpacket.__name__ for p in products] == ["mm", "baddbmm_", "bmm"]
    assert products[0].args[1][1:3] == ((4, 5), (1, 4)) and products[2].args[0][1:3] == ((2, 3, 4), (0, 4, 1))
    expanded = floor._tensor((2, 3, 4), (0, 4, 1), torch.float32)
    assert expanded.shape == (2, 3, 4) and expanded.stride() == (0, 4, 1)
    assert torch.equal(expanded[0], expanded[1])
    assert floor.replayer(products)(3) > 0  # runs them on such tensors (in place included)
