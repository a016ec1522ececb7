"""J (region IoU) of DAVIS predictions computed by hand, to check the evaluator's figures by value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def j_by_hand(root: Path, predictions: Path, sequence: str, object_id: int) -> list[float]:
    """Per-frame IoU of ``object_id`` over frames 1..T-2 (DAVIS 2017 leaves out the first and last frames).

    Ground truth: ``root/Annotations/480p/<sequence>/*.png`` (palette indices; void 255 counts as background);
    predictions: ``predictions/<sequence>/*.png``. Empty against empty is 1, as in the DAVIS evaluation.
    """
    gt_files = sorted((root / "Annotations" / "480p" / sequence).glob("*.png"))
    values = []
    for gt_file in gt_files[1:-1]:
        gt = np.asarray(Image.open(gt_file)) == object_id
        pred = np.asarray(Image.open(predictions / sequence / gt_file.name)) == object_id
        union = np.logical_or(gt, pred).sum()
        values.append(1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union))
    return values
