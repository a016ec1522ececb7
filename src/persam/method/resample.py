"""Exact grid-to-photo resampling as separable linear maps.

SAM brings a map on its grid back to the photo with a chain of bilinear
resizes (``F.interpolate``, ``align_corners=False``): grid -> padded encoder
frame -> crop to the resized image -> original (H, W); for SAM 2's square
geometry (no padding) grid -> original (H, W) directly. Each resize is linear
and separable, so the whole chain is ``full = Ry @ grid @ Rx.T`` with
``Ry`` (H, n) and ``Rx`` (W, n), every row non-negative and summing to one.

That lets PerSAM answer the questions it asks of full-resolution maps
(arg-max and arg-min, mean and std, the bounding box of the positive pixels,
the map resized back to the grid) from the grid alone, without building the
(H, W) map, with the same result up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch

from persam.backends.base import ImageGeometry


def interp_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64 matrix of a 1-D bilinear resize.

    Matches ``F.interpolate(mode="bilinear", align_corners=False)`` with either
    ``size=out_size`` or an integer ``scale_factor = out_size / in_size``.
    """
    scale = in_size / out_size
    dst = torch.arange(out_size, dtype=torch.float64)
    src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    frac = src - i0
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    mat.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    mat.index_put_((rows, i1), frac, accumulate=True)
    return mat


@dataclass(frozen=True)
class ChainOperator:
    """The linear map ``grid (n_y, n_x) -> photo (H, W)``: ``full = ry @ grid @ rx.T``.

    Attributes:
        ry: (H, n_y) float64 row weights.
        rx: (W, n_x) float64 column weights.
    """

    ry: torch.Tensor
    rx: torch.Tensor

    @cached_property
    def _f32(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``ry`` and ``rx`` in float32 (CPU)."""
        return self.ry.float(), self.rx.float()

    def full(self, grid: torch.Tensor) -> torch.Tensor:
        """(..., n_y, n_x) -> (..., H, W) float32 full-resolution map."""
        ry, rx = (m.to(grid.device) for m in self._f32)
        return ry @ grid.float() @ rx.T

    @cached_property
    def _grams(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Column sums and Gram matrices of ``ry`` and ``rx`` (float64)."""
        return self.ry.sum(0), self.rx.sum(0), self.ry.T @ self.ry, self.rx.T @ self.rx

    @cached_property
    def round_trip(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_y, n_y) and (n_x, n_x) float64 maps of ``full`` followed by a bilinear
        resize (no antialias) of the (H, W) map back to the grid: ``dy @ grid @ dx.T``."""
        n_y, n_x = self.ry.shape[1], self.rx.shape[1]
        return interp_matrix(self.ry.shape[0], n_y) @ self.ry, interp_matrix(self.rx.shape[0], n_x) @ self.rx

    def mean_std(self, grid: torch.Tensor) -> tuple[float, float]:
        """Mean and unbiased std of the full map, from Gram matrices of the weights."""
        g = grid.double().cpu()
        n = self.ry.shape[0] * self.rx.shape[0]
        sum_y, sum_x, gram_y, gram_x = self._grams
        total = sum_y @ g @ sum_x
        squares = ((g @ gram_x @ g.T) * gram_y).sum()
        mean = float(total / n)
        var = float((squares - n * mean * mean) / (n - 1))
        return mean, max(var, 0.0) ** 0.5

    def argmax(self, grid: torch.Tensor, largest: bool = True) -> tuple[int, int]:
        """(x, y) pixel of the full map's max (or min); first in row-major order on ties.

        Rows are bounded from above by the max of ``ry @ grid`` (the column
        weights are convex), so only rows that can beat a known value are built.
        """
        g = grid.double().cpu() if largest else -grid.double().cpu()
        rows = self.ry @ g  # (H, n_x)
        bound = rows.max(dim=1).values
        best_row = int(bound.argmax())
        floor = float((rows[best_row] @ self.rx.T).max())
        cand = torch.nonzero(bound >= floor - 1e-9 * (1.0 + abs(floor))).flatten()  # rounding slack
        values = rows[cand] @ self.rx.T  # (k, W)
        top = values.max()
        hits = torch.nonzero(values == top)
        order = torch.argsort(cand[hits[:, 0]] * values.shape[1] + hits[:, 1])
        r, c = hits[order[0]].tolist()
        return int(c), int(cand[r])

    @cached_property
    def _supports(self) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last grid index each photo row / column draws from: (H, 2), (W, 2)."""

        def span(m: torch.Tensor) -> torch.Tensor:
            nz = m != 0
            idx = torch.arange(m.shape[1])
            first = torch.where(nz, idx, m.shape[1]).min(1).values
            last = torch.where(nz, idx, -1).max(1).values
            return torch.stack([first, last], 1)

        return span(self.ry), span(self.rx)

    def positive_box(self, grid: torch.Tensor) -> tuple[int, int, int, int] | None:
        """XYXY pixel box of ``full(grid) > 0``, or None when no pixel is positive.

        A photo pixel can only be positive if a grid cell in its support is,
        so only the rows and columns whose support meets the positive cells'
        bounding box are candidates, scanned from each side until a line with
        a positive pixel is found (usually the first few).
        """
        g = grid.float().cpu()
        pos = g > 0
        if not bool(pos.any()):
            return None
        a = torch.nonzero(pos.any(1)).flatten()
        b = torch.nonzero(pos.any(0)).flatten()
        row_span, col_span = self._supports
        rows_i = torch.nonzero((row_span[:, 0] <= a[-1]) & (row_span[:, 1] >= a[0])).flatten()
        cols_j = torch.nonzero((col_span[:, 0] <= b[-1]) & (col_span[:, 1] >= b[0])).flatten()
        if rows_i.numel() == 0 or cols_j.numel() == 0:  # positive cells only in the padding
            return None
        ya0, ya1 = int(row_span[rows_i, 0].min()), int(row_span[rows_i, 1].max())
        xb0, xb1 = int(col_span[cols_j, 0].min()), int(col_span[cols_j, 1].max())
        ry32, rx32 = self._f32
        ry = ry32[rows_i, ya0 : ya1 + 1]
        rx = rx32[cols_j, xb0 : xb1 + 1]
        sub = g[ya0 : ya1 + 1, xb0 : xb1 + 1]
        y0 = _first_positive(len(rows_i), lambda k: ry[k] @ sub @ rx.T)
        if y0 is None:
            return None
        y1 = _first_positive(len(rows_i), lambda k: ry[k] @ sub @ rx.T, reverse=True)
        x0 = _first_positive(len(cols_j), lambda k: rx[k] @ sub.T @ ry.T)
        x1 = _first_positive(len(cols_j), lambda k: rx[k] @ sub.T @ ry.T, reverse=True)
        return (int(cols_j[x0]), int(rows_i[y0]), int(cols_j[x1]), int(rows_i[y1]))


def _first_positive(
    n: int, lines: Callable[[torch.Tensor], torch.Tensor], reverse: bool = False, chunk: int = 8
) -> int | None:
    """Index of the first (or last) of ``n`` lines with a value > 0; ``lines(idx)`` gives (k, L) values."""
    order = torch.arange(n - 1, -1, -1) if reverse else torch.arange(n)
    for start in range(0, n, chunk):
        idx = order[start : start + chunk]
        hit = (lines(idx) > 0).any(dim=1)
        if bool(hit.any()):
            return int(idx[int(torch.nonzero(hit)[0])])
    return None


@lru_cache(maxsize=16)
def logits_operator(geometry: ImageGeometry) -> ChainOperator:
    """Operator of SAM's ``postprocess_masks`` for low-res logits (4h, 4w) -> (H, W)."""
    return _chain(geometry, geometry.low_res_hw, pre_upsample=1)


@lru_cache(maxsize=16)
def similarity_operator(geometry: ImageGeometry) -> ChainOperator:
    """Operator of the reference similarity map: grid (h, w) x4 bilinear, then as logits."""
    return _chain(geometry, geometry.grid_hw, pre_upsample=4)


def _chain(geometry: ImageGeometry, in_hw: tuple[int, int], pre_upsample: int) -> ChainOperator:
    s = geometry.input_size
    mats = []
    for axis in (0, 1):
        n = in_hw[axis]
        m = interp_matrix(n, n * pre_upsample) if pre_upsample != 1 else torch.eye(n, dtype=torch.float64)
        if geometry.resize == "longest_side":
            m = interp_matrix(n * pre_upsample, s) @ m  # to the padded encoder frame
            m = m[: geometry.resized_hw[axis]]  # crop the padding
        # "square" (SAM 2): no padding; straight to the photo, as SAM2Transforms.postprocess_masks
        out = geometry.original_hw[axis]
        if out != m.shape[0]:
            m = interp_matrix(m.shape[0], out) @ m
        mats.append(m)
    return ChainOperator(ry=mats[0], rx=mats[1])


def upscale_logits(low_res: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """SAM's ``postprocess_masks``: (K, 4h, 4w) logits -> (K, H, W) float32 logits.

    For a "square" geometry (SAM 2) one bilinear resize to (H, W), as
    ``SAM2Transforms.postprocess_masks`` (without its optional hole filling).
    """
    s = geometry.input_size
    x = low_res[None].float()
    if geometry.resize == "longest_side":
        x = torch.nn.functional.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        x = x[..., : geometry.resized_hw[0], : geometry.resized_hw[1]]
    if tuple(x.shape[-2:]) != geometry.original_hw:
        x = torch.nn.functional.interpolate(x, geometry.original_hw, mode="bilinear", align_corners=False)
    return x[0]
