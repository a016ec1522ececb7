"""The matcher prior against an independent restatement of the authors' Matcher (``reference_oracle_matcher``).

Both run on the same frozen modules: the tiny random SAM (official classes)
and a tiny random DINOv2 (timm for persam, transformers for the oracle, the
same Meta-layout weights, LayerScale random too); the oracle's random steps
use the global generators seeded as ours. Compared: the prompt points
(k-means centres) exactly, and the final merged mask (IoU >= 0.99).
Synthetic scenes always; the PerSeg sample photos when present (skipped otherwise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extras import require

require("ot")
require("scipy")
require("transformers")

import persam  # noqa: E402
from persam.backends.dinov2 import create_dino  # noqa: E402
from persam.jobs.synthetic import tiled_photo  # noqa: E402
from reference_oracle_matcher import OracleDino, random_dinov2_state, run_matcher  # noqa: E402

MIN_IOU = 0.99
TINY = {"embed_dim": 48, "depth": 2, "num_heads": 2}
DATA = next(
    (
        p / "shared" / "data" / "perseg-sample"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "data" / "perseg-sample").is_dir()
    ),
    Path("/nonexistent/perseg-sample"),
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from segment_anything.modeling import Sam

    state = random_dinov2_state(7, **TINY)
    path = tmp_path_factory.mktemp("dino") / "tiny.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    model._dino = create_dino("dinov2_vits14", path, device="cpu", architecture=dict(TINY))
    b = model.backend
    sam = Sam(image_encoder=b.image_encoder, prompt_encoder=b.prompt_encoder, mask_decoder=b.mask_decoder).eval()
    return model, sam, OracleDino(state, num_heads=TINY["num_heads"])


def compare(models, ref, ref_mask, target) -> float:
    model, sam, dino = models
    ours = model.personalize(ref, ref_mask, prior="matcher").segment(target)
    oracle = run_matcher(sam, dino, ref, ref_mask, target, seed=0)
    scale = np.array([target.shape[1] / 518, target.shape[0] / 518])
    np.testing.assert_array_equal(ours.matched_xy, (oracle.points * scale).astype(np.int64))
    score = iou(ours.mask, oracle.mask)
    assert score >= MIN_IOU, f"IoU {score:.4f} with the oracle ({oracle.n_masks} candidate masks)"
    assert oracle.mask.any() and not oracle.mask.all(), "a trivial mask compares nothing"
    print(f"IoU {score:.4f}, {int(oracle.mask.sum())} px, {oracle.n_masks} candidates")
    return score


SCENES = {"ellipse-a": (50, 51), "ellipse-b": (60, 62)}


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_synthetic_scene_matches_oracle(models, scene):
    ref_seed, tgt_seed = SCENES[scene]
    ref, mask = tiled_photo(72, 96, seed=ref_seed)
    target, _ = tiled_photo(72, 96, seed=tgt_seed)
    compare(models, ref, mask, target)


SAMPLES = ["cat", "colorful_sneaker", "duck_toy"]


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="PerSeg sample photos absent")
@pytest.mark.parametrize("name", SAMPLES)
def test_sample_photo_matches_oracle(models, name):
    folder = DATA / "Images" / name
    ref = np.array(Image.open(folder / "00.jpg").convert("RGB"))
    mask = np.array(Image.open(DATA / "Annotations" / name / "00.png").convert("L")) > 0
    target = np.array(Image.open(folder / "01.jpg").convert("RGB"))
    compare(models, ref, mask, target)
