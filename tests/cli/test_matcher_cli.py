"""``--prior matcher`` on segment and personalize (tiny SAM, tiny random DINOv2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extras import require

require("ot")
require("scipy")

from conftest import synthetic_photo  # noqa: E402
from persam.cli.main import main  # noqa: E402

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("tiny_dino")  # tests/conftest.py


def photo(path: Path, seed: int) -> Path:
    Image.fromarray(synthetic_photo(72, 96, seed=seed)[0]).save(path)
    return path


@pytest.fixture
def small_refs(tmp_path: Path) -> list[str]:
    ref, mask = synthetic_photo(72, 96, seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    return ["--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png")]


def test_concept_file_segments_like_the_direct_run(tmp_path, small_refs):
    target = photo(tmp_path / "t.png", 8)
    concept = tmp_path / "c.persam"
    assert main(["personalize", *small_refs, "--prior", "matcher", "-o", str(concept), *TINY]) == 0
    assert main(["segment", "--concept", str(concept), str(target), "-o", str(tmp_path / "a"), *TINY]) == 0
    assert main(["segment", *small_refs, "--prior", "matcher", str(target), "-o", str(tmp_path / "b"), *TINY]) == 0
    a = np.array(Image.open(tmp_path / "a" / "t.png"))
    b = np.array(Image.open(tmp_path / "b" / "t.png"))
    assert a.any()
    np.testing.assert_array_equal(a, b)


def test_refused_combinations(tmp_path, small_refs, capsys):
    target = photo(tmp_path / "t.png", 9)
    out = str(tmp_path / "o")
    assert main(["segment", *small_refs, "--prior", "matcher", "--finetune", str(target), "-o", out, *TINY]) == 2
    assert (
        main(["segment", *small_refs, "--prior", "matcher", "--max-instances", "3", str(target), "-o", out, *TINY]) == 2
    )
    assert "internal error" not in capsys.readouterr().err
