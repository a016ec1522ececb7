import pytest
import torch
import torch.nn.functional as F

from persam.backends.base import ImageGeometry
from persam.method.resample import interp_matrix, logits_operator, similarity_operator, upscale_logits

SIZES = [(300, 400), (1365, 2048), (1024, 1024), (77, 500), (2048, 1536)]


def reference_similarity_map(grid: torch.Tensor, g: ImageGeometry) -> torch.Tensor:
    x = F.interpolate(grid[None, None], scale_factor=4, mode="bilinear", align_corners=False)
    x = F.interpolate(x, (g.input_size, g.input_size), mode="bilinear", align_corners=False)
    x = x[..., : g.resized_hw[0], : g.resized_hw[1]]
    return F.interpolate(x, g.original_hw, mode="bilinear", align_corners=False)[0, 0]


@pytest.mark.parametrize("n_in,n_out", [(4, 16), (64, 256), (256, 1024), (1024, 300), (700, 2048), (5, 5)])
def test_interp_matrix_matches_interpolate(n_in, n_out):
    x = torch.randn(3, n_in, dtype=torch.float64)
    ref = F.interpolate(x[None], size=n_out, mode="linear", align_corners=False)[0]
    assert torch.allclose(x @ interp_matrix(n_in, n_out).T, ref, atol=1e-12)


@pytest.mark.parametrize("hw", SIZES)
def test_similarity_operator_answers_like_full_map(hw):
    torch.manual_seed(hw[0])
    g = ImageGeometry.for_image(hw, 1024, (64, 64))
    grid = torch.randn(64, 64)
    full = reference_similarity_map(grid, g)
    op = similarity_operator(g)
    assert torch.allclose(op.full(grid), full, atol=5e-5)
    mean, std = op.mean_std(grid)
    assert mean == pytest.approx(full.double().mean().item(), abs=1e-5)
    assert std == pytest.approx(full.double().std().item(), rel=1e-5)
    i = int(full.flatten().topk(1)[1])
    assert op.argmax(grid) == (i % hw[1], i // hw[1])
    j = int(full.flatten().topk(1, largest=False)[1])
    assert op.argmax(grid, largest=False) == (j % hw[1], j // hw[1])


def test_argmax_takes_first_of_ties():
    g = ImageGeometry.for_image((40, 60), 64, (4, 4))
    grid = torch.zeros(4, 4)
    grid[1:3, 1:3] = 1.0  # a plateau: many full-res pixels share the max
    full = similarity_operator(g).full(grid)
    ys, xs = torch.nonzero(full == full.max(), as_tuple=True)
    assert similarity_operator(g).argmax(grid) == (int(xs[0]), int(ys[0]))


@pytest.mark.parametrize("hw", SIZES[:3])
@pytest.mark.parametrize("blob", [(10, 30, 50, 90), (0, 0, 20, 20), (200, 180, 256, 256), (120, 120, 121, 121)])
def test_positive_box_matches_thresholded_map(hw, blob):
    g = ImageGeometry.for_image(hw, 1024, (64, 64))
    low = torch.full((256, 256), -3.0)
    y0, x0, y1, x1 = blob
    low[y0:y1, x0:x1] = 4.0
    full = upscale_logits(low[None], g)[0]
    ys, xs = torch.nonzero(full > 0, as_tuple=True)
    box = logits_operator(g).positive_box(low)
    if ys.numel() == 0:
        assert box is None
    else:
        assert box == (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def test_positive_box_of_nothing_is_none():
    g = ImageGeometry.for_image((300, 400), 1024, (64, 64))
    assert logits_operator(g).positive_box(torch.full((256, 256), -1.0)) is None
