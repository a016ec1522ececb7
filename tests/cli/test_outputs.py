"""persam.jobs.outputs without a model: masks, label maps, overlays, manifest and COCO records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from persam.jobs.outputs import Done, OutputOptions, Outputs, write_result


@dataclass
class Found:
    mask: np.ndarray
    score: float
    present: bool


def test_outputs_write_masks_manifest_and_coco(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:10, 4:14] = True
    pixels = np.full((20, 30, 3), 100, np.uint8)
    outputs = Outputs(tmp_path / "out", OutputOptions(overlay=True, coco=True))
    outputs.add(
        write_result(
            outputs.root, Path("a/01.jpg"), Path("a/01"), pixels, mask, [Found(mask, 0.75, True)], outputs.options
        )
    )
    outputs.add(Done.skipped(Path("b.jpg"), ValueError("b.jpg: not an image")))
    outputs.add(
        write_result(
            outputs.root,
            Path("c.jpg"),
            Path("c"),
            pixels,
            np.zeros_like(mask),
            [Found(np.zeros_like(mask), 0.1, False)],
            outputs.options,
        )
    )
    outputs.save("persam", "sam_tiny")

    written = np.array(Image.open(tmp_path / "out" / "a" / "01.png"))
    assert np.array_equal(written > 0, mask)
    assert (tmp_path / "out" / "a" / "01_overlay.jpg").is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["method"] == "persam" and manifest["model"] == "sam_tiny"
    assert [e["status"] for e in manifest["inputs"]] == ["written", "skipped", "written"]
    assert manifest["inputs"][0]["mask"] == "a/01.png" and manifest["inputs"][0]["scores"] == [0.75]
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [i["id"] for i in coco["images"]] == [1, 2]
    assert len(coco["annotations"]) == 1 and coco["annotations"][0]["area"] == 50
    assert coco["annotations"][0]["bbox"] == [4.0, 5.0, 10.0, 5.0]
    assert outputs.counts() == {"written": 2, "skipped": 1, "failed": 0, "absent": 1}


def test_label_maps_with_instances(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), np.uint8)
    labels[:2, :2], labels[5:, 5:] = 1, 2
    found = [Found(labels == 1, 0.9, True), Found(labels == 2, 0.8, True)]
    outputs = Outputs(tmp_path, OutputOptions(max_instances=2))
    done = write_result(tmp_path, Path("x.png"), Path("x"), None, labels, found, outputs.options)
    assert done.entry["instances"] == 2 and done.coco is None and "overlay" not in done.entry
    assert np.array_equal(np.array(Image.open(tmp_path / "x.png")), labels)
