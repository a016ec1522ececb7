"""Shared by the PerSeg and DAVIS modules: mask-array checks and dataset-folder helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from persam.errors import InputError, MissingInputError

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]
PathLike = str | Path


def as_mask(mask: ArrayLike, name: str) -> BoolArray:
    """``mask`` as an ``(H, W)`` bool array (nonzero = object); ``name`` is used in the error."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got an array of shape {arr.shape}")
    return arr.astype(bool)


def as_mask_pair(pred: ArrayLike, gt: ArrayLike) -> tuple[BoolArray, BoolArray]:
    """Prediction and ground truth as ``(H, W)`` bool arrays of one shape."""
    p, g = as_mask(pred, "pred"), as_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has shape {p.shape} but gt has shape {g.shape}; expected equal (H, W)")
    return p, g


def window_sum(mask: BoolArray, half: int, axis: int) -> NDArray[np.int32]:
    """Count of ones in the window ``[i - half, i + half]`` along ``axis`` (zeros outside), O(H*W)."""
    n, width = mask.shape[axis], 2 * half + 1
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half + 1, half)
    csum = np.cumsum(np.pad(mask.astype(np.int32), pad), axis=axis, dtype=np.int32)
    return csum[width:] - csum[:n] if axis == 0 else csum[:, width:] - csum[:, :n]


_Item = TypeVar("_Item")


class NamedIndex(Generic[_Item]):
    """Ordered, name-addressable collection of dataset entries."""

    _items: tuple[_Item, ...]
    _where: str

    @property
    def names(self) -> list[str]:
        """Entry names in dataset order."""
        return [item.name for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_Item]:
        return iter(self._items)

    def __getitem__(self, name: str) -> _Item:
        for item in self._items:
            if item.name == name:
                return item
        raise KeyError(f"{name!r} is not in {self._where}; known: {', '.join(self.names)}")


def is_visible(path: Path) -> bool:
    """Whether a file or folder is not hidden (no leading dot)."""
    return not path.name.startswith(".")


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_visible(p))


def require_dir(path: Path, what: str, layout: str) -> None:
    """Raise FileNotFoundError naming ``what`` and the expected ``layout`` unless ``path`` is a folder."""
    if not path.is_dir():
        raise MissingInputError(f"{what} {path} not found; expected {layout}")


def check_same_shape(pred: np.ndarray, gt: np.ndarray, pred_path: Path, gt_path: Path) -> None:
    """Raise ValueError naming both files unless the prediction and ground truth have one (H, W)."""
    if pred.shape != gt.shape:
        raise InputError(
            f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but ground truth {gt_path} "
            f"is {gt.shape[1]}x{gt.shape[0]} (WxH); predictions must match the GT size"
        )
