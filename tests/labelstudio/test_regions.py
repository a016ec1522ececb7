"""Predictions written in each tool's kind read back as the mask they came from (no server needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from extras import require

TOOL = '<View><Image name="im" value="$photo"/><{0} name="t" toName="im"><Label value="cat"/></{0}></View>'
CONFIGS = {
    "brush": TOOL.format("BrushLabels"),
    "polygon": TOOL.format("PolygonLabels"),
    "rectangle": TOOL.format("RectangleLabels"),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_mask_written_as_each_kind_reads_back(kind):
    require("label_studio_sdk")
    require("cv2")
    from persam.labelstudio.config import parse_config
    from persam.labelstudio.regions import mask_results, read_region

    config = parse_config(CONFIGS[kind])
    assert config.value == "photo" and config.output().kind == kind
    mask = np.zeros((60, 80), bool)
    mask[10:40, 20:50] = True  # a rectangle: every kind can hold it
    mask[45:55, 60:70] = True  # and a second blob
    regions = mask_results(mask, "cat", 0.75, config.output(), config)
    assert [r["type"] for r in regions] == [f"{kind}labels"] * (2 if kind == "polygon" else 1)
    assert all(r["score"] == 0.75 and r["to_name"] == "im" for r in regions)
    back = np.zeros_like(mask)
    for r in regions:
        region = read_region(json.loads(json.dumps(r)))
        assert region.label == "cat" and region.shape == (60, 80)
        if region.box is not None:
            x0, y0, x1, y1 = (round(v) for v in region.box)
            back[y0:y1, x0:x1] = True
        else:
            back |= region.mask
    if kind == "rectangle":
        assert tuple(round(v) for v in read_region(regions[0]).box) == (20, 10, 70, 55)  # the bounding box
    else:
        # brush is exact; a polygon traced along the pixel centres of the outline, filled with its outline
        assert iou(back, mask) >= (1.0 if kind == "brush" else 0.999), iou(back, mask)
