"""manifest.json records, per instance, the prompts of every decoder pass that made its mask."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from conftest import synthetic_photo
from persam.cli.main import main


def run_segment(tmp_path, checkpoint, *extra: str) -> dict:
    image, mask = synthetic_photo()
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    Image.fromarray(image[:, ::-1].copy()).save(tmp_path / "target.png")
    out = tmp_path / "out"
    status = main(
        [
            "segment",
            "--ref",
            str(tmp_path / "ref.png"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            str(tmp_path / "target.png"),
            "-o",
            str(out),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
            "--quiet",
            *extra,
        ]
    )
    assert status == 0
    return json.loads((out / "manifest.json").read_text())["inputs"][0]


def test_persam_records_its_three_passes(tmp_path, tiny_checkpoint):
    entry = run_segment(tmp_path, tiny_checkpoint)
    (passes,) = entry["prompts"]
    assert len(passes) == 3
    first, refine1, refine2 = passes
    assert first["point_labels"] == [1, 0] and first["box_xyxy"] is None
    assert refine1["points_xy"] == first["points_xy"] and refine1["box_xyxy"] is None
    x0, y0, x1, y1 = refine2["box_xyxy"]
    assert 0 <= x0 <= x1 and 0 <= y0 <= y1
    for p in passes:
        assert set(p) == {"points_xy", "point_labels", "box_xyxy"}
        assert all(len(xy) == 2 for xy in p["points_xy"])


def test_persam_f_records_its_box_from_the_first_pass(tmp_path, tiny_checkpoint):
    entry = run_segment(tmp_path, tiny_checkpoint, "--finetune")
    (passes,) = entry["prompts"]
    assert [p["point_labels"] for p in passes] == [[1], [1], [1]]
    assert passes[0]["box_xyxy"] is None and passes[1]["box_xyxy"] is not None


def test_ablation_without_refinement_records_one_pass(tmp_path, tiny_checkpoint):
    entry = run_segment(tmp_path, tiny_checkpoint, "--without", "refinement")
    assert [len(p) for p in entry["prompts"]] == [1]


def test_several_instances_record_one_list_each(tmp_path, tiny_checkpoint):
    entry = run_segment(tmp_path, tiny_checkpoint, "--max-instances", "3")
    assert len(entry["prompts"]) == len(entry["scores"]) >= 1
    assert all(len(passes) == 3 for passes in entry["prompts"])
