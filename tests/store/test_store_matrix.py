"""Every model family x every album store format x local and Ray: ``persam index`` then ``persam segment
--index`` gives the masks of a direct ``persam segment`` run (identical pixels in float32, IoU >= 0.999 in
float16). Tiny random-weight models of both families, three small photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import needs, require
from persam.cli.main import main

require("pyarrow.parquet")

FAMILY_PARAMS = [
    pytest.param(["--model", "sam_tiny", "--random-weights", "--device", "cpu"], id="sam"),
    pytest.param(
        ["--model", "sam2_tiny", "--random-weights", "--device", "cpu"],
        id="sam2",
        marks=needs("sam2"),
    ),
]
NAMES = ("p0.png", "p1.png", "p2.png")


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(folder / name)) > 0 for name in NAMES}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module", params=FAMILY_PARAMS)
def family(request, tmp_path_factory):
    """(model options, album folder, the direct run's masks) of one model family."""
    model = request.param
    root = tmp_path_factory.mktemp(model[1])
    ref, mask = synthetic_photo(96, 128, seed=50)
    Image.fromarray(ref).save(root / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ref_mask.png")
    (root / "photos").mkdir()
    for i, name in enumerate(NAMES):
        Image.fromarray(synthetic_photo(96 + 8 * i, 128, seed=60 + i)[0]).save(root / "photos" / name)
    concept = ["--ref", str(root / "ref.png"), "--ref-mask", str(root / "ref_mask.png")]
    assert main(["personalize", *concept, "-o", str(root / "c.persam"), *model]) == 0
    seg = ["--concept", str(root / "c.persam"), *model]
    assert main(["segment", str(root / "photos"), "-o", str(root / "direct"), *seg]) == 0
    direct = masks(root / "direct")
    assert any(0 < m.sum() < m.size for m in direct.values()), "the direct masks are trivial: nothing is checked"
    return model, root, direct


def index_then_segment(family, store: str, dtype: str, ray: list[str]) -> dict[str, np.ndarray]:
    model, root, _ = family
    out = root / f"from_{Path(store).name}_{dtype}{'_ray' if ray else ''}"
    assert main(["index", str(root / "photos"), "-o", str(root / store), "--dtype", dtype, *ray, *model]) == 0
    seg = ["--concept", str(root / "c.persam"), *model, *ray]
    assert main(["segment", "--index", str(root / store), "-o", str(out), *seg]) == 0
    entries = json.loads((out / "manifest.json").read_text())["inputs"]
    assert [e["status"] for e in entries] == ["written"] * len(NAMES)
    return masks(out)


@pytest.mark.parametrize("store", ["album.idx", "store"])
def test_index_then_segment_equals_a_direct_run(family, store):
    direct = family[2]
    exact = index_then_segment(family, f"f32_{store}", "float32", [])
    assert all(np.array_equal(exact[n], direct[n]) for n in NAMES)
    half = index_then_segment(family, f"f16_{store}", "float16", [])
    assert min(iou(half[n], direct[n]) for n in NAMES) >= 0.999


@pytest.fixture(scope="module")
def ray_runtime():
    ray = require("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    yield
    ray.shutdown()


def test_ray_index_then_segment_equals_a_direct_run(family, ray_runtime):
    exact = index_then_segment(family, "ray_store", "float32", ["--ray"])
    assert all(np.array_equal(exact[n], family[2][n]) for n in NAMES)
