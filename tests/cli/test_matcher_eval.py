"""``persam eval perseg --prior matcher`` runs the matcher prior (tiny SAM, tiny DINOv2) on a PerSeg-layout folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extras import require

require("ot")
require("scipy")

import persam  # noqa: E402
from persam.cli.main import main  # noqa: E402
from persam.io import save_label_map  # noqa: E402
from persam.jobs.synthetic import tiled_photo  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_dino")  # tests/conftest.py
TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


@pytest.fixture
def perseg_root(tmp_path: Path) -> Path:
    """One object, reference 00 and test photos 01, 02 (72x96 tiled scenes with their masks)."""
    root = tmp_path / "PerSeg"
    for nn, seed in (("00", 50), ("01", 51), ("02", 52)):
        photo, mask = tiled_photo(72, 96, seed=seed)
        (root / "Images" / "toy").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(root / "Images" / "toy" / f"{nn}.jpg", quality=95)
        save_label_map(root / "Annotations" / "toy" / f"{nn}.png", mask.astype(np.uint8))
    return root


def test_eval_perseg_runs_the_matcher_prior(perseg_root: Path, tmp_path: Path, capsys) -> None:
    out, report = tmp_path / "pred", tmp_path / "report.json"
    torch.manual_seed(0)
    assert (
        main(["eval", "perseg", str(perseg_root), "--prior", "matcher", "-o", str(out), "--json", str(report), *TINY])
        == 0
    )
    data = json.loads(report.read_text())
    assert data["settings"]["prior"] == "matcher" and data["settings"]["dino"] == "dinov2_vitl14"
    assert sorted(p.name for p in (out / "toy").iterdir()) == ["01.png", "02.png"]

    # the same masks as the Python API's matcher prior with the same (seeded) random models
    torch.manual_seed(0)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    ref = np.asarray(Image.open(perseg_root / "Images" / "toy" / "00.jpg").convert("RGB"))
    ref_mask = np.asarray(Image.open(perseg_root / "Annotations" / "toy" / "00.png")) > 0
    concept = model.personalize(ref, ref_mask, prior="matcher")
    for nn in ("01", "02"):
        photo = np.asarray(Image.open(perseg_root / "Images" / "toy" / f"{nn}.jpg").convert("RGB"))
        expected = concept.segment(photo).mask
        got = np.asarray(Image.open(out / "toy" / f"{nn}.png")) > 0
        np.testing.assert_array_equal(got, expected)
        assert expected.any()


def test_eval_perseg_matcher_refusals(perseg_root: Path, capsys) -> None:
    assert main(["eval", "perseg", str(perseg_root), "--prior", "matcher", "--method", "persam-f", *TINY]) == 2
    assert "matcher prior is training-free" in capsys.readouterr().err
    argv = ["eval", "perseg", str(perseg_root), "--prior", "matcher", "--without", "refinement", *TINY]
    assert main(argv) == 2
    assert "no PerSAM components to switch off" in capsys.readouterr().err
