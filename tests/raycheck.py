"""What the Ray tests check their outputs with: the rows of a store, the masks of a folder, and the tolerance
between a local run and a Ray run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def ray_data_console_here() -> None:
    """Point Ray Data's console log handler at the current ``sys.stderr``. The handler keeps the stream of
    when it was made: made under an earlier test's ``capsys`` it writes to a closed stream, and each record
    becomes a "--- Logging error ---" traceback in a later test's stderr (which one-line checks read)."""
    import logging

    import ray.data  # noqa: F401  (configures Ray Data's loggers)
    from ray._private.log import PlainRayHandler

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, PlainRayHandler):
            handler.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed


def stored_rows(store: Path) -> list[dict]:
    """Every row of every part file, read with pyarrow directly."""
    import pyarrow.parquet as pq

    rows = []
    for file in sorted(store.glob("*.parquet")):
        rows += pq.read_table(file, columns=["path", "sha256", "status", "reason", "run"]).to_pylist()
    return rows


#: Local (torch's default threads) against Ray (one-thread actors): the same computation with sums in another
#: order, so equal up to float rounding: masks IoU >= MIN_IOU, scores within SCORE_TOL, everything else equal.
MIN_IOU = 0.999
SCORE_TOL = 1e-4


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_close(ray_side, local, where: str = "") -> None:
    """Two JSON documents equal, floats within ``SCORE_TOL``; COCO RLE masks by IoU, their areas and boxes near."""
    if isinstance(local, dict):
        assert isinstance(ray_side, dict) and ray_side.keys() == local.keys(), where
        if "counts" in local and "size" in local:  # a COCO RLE segmentation
            from pycocotools import mask as rle

            value = mask_iou(rle.decode(_rle(ray_side)) > 0, rle.decode(_rle(local)) > 0)
            assert value >= MIN_IOU, f"{where}: IoU {value:.5f}"
            return
        for key in local:
            if key in ("area", "bbox") and "segmentation" in local:  # follow the mask (within its IoU)
                tol = (1 - MIN_IOU) * max(1.0, float(local["area"])) if key == "area" else 1.0
                assert np.allclose(ray_side[key], local[key], rtol=0, atol=tol), f"{where}.{key}"
                continue
            assert_close(ray_side[key], local[key], f"{where}.{key}")
    elif isinstance(local, list):
        assert isinstance(ray_side, list) and len(ray_side) == len(local), where
        for i, (x, y) in enumerate(zip(ray_side, local)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(local, float):
        assert isinstance(ray_side, (int, float)) and abs(ray_side - local) <= SCORE_TOL, (where, ray_side, local)
    else:
        assert ray_side == local, (where, ray_side, local)


def _rle(segmentation: dict) -> dict:
    counts = segmentation["counts"]
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}
