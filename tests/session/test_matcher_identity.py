"""Loading a matcher concept checks its DINOv2 by name and weights' SHA-256 without building the model's DINOv2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from extras import require

require("ot")
require("scipy")
require("timm")

import persam  # noqa: E402
from persam.backends.dinov2 import DinoChoice, dino_identity  # noqa: E402
from persam.errors import IncompatibleError  # noqa: E402
from persam.io.hashing import file_sha256  # noqa: E402
from persam.jobs.synthetic import tiled_photo  # noqa: E402
from persam.session.concept_file import load_concept, save_concept  # noqa: E402
from persam.session.photo import PersamModel  # noqa: E402
from reference_oracle_matcher import random_dinov2_state  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_dino")  # the tiny architecture: embed 48, depth 2, heads 2
TINY = {"embed_dim": 48, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dino")
    paths = folder / "a.pth", folder / "b.pth"
    for seed, path in zip((1, 2), paths):
        torch.save(random_dinov2_state(seed, **TINY), path)
    return paths


def session(checkpoint: Path) -> PersamModel:
    torch.manual_seed(0)
    sam = persam.load("sam_tiny", random_weights=True, device="cpu").backend
    return PersamModel(sam, dino=DinoChoice("dinov2_vits14", checkpoint, "cpu", False, False))


def test_identity_from_the_file_alone(weights, tmp_path):
    a, _ = weights
    assert dino_identity("dinov2_vits14", a) == ("dinov2_vits14", file_sha256(a))
    assert dino_identity("dinov2_vits14", random_weights=True) == ("dinov2_vits14", "random")
    assert dino_identity("dinov2_vits14", tmp_path / "absent.pth") is None


def test_loading_a_matcher_concept_builds_no_dino(weights, tmp_path):
    a, b = weights
    learner = session(a)
    ref, mask = tiled_photo(72, 96, seed=50)
    concept = learner.personalize(ref, mask, prior="matcher")
    assert concept.matcher.backbone_sha256 == file_sha256(a)
    path = save_concept(concept, tmp_path / "c.persam")

    same = session(a)
    loaded = load_concept(path, same)
    assert loaded.matcher is not None and same._dino is None  # checked by the file's hash, nothing built
    target, _ = tiled_photo(72, 96, seed=51)
    assert (loaded.segment(target).mask == concept.segment(target).mask).all()  # built on first use: same masks

    other = session(b)
    with pytest.raises(IncompatibleError, match="learned with DINOv2 'dinov2_vits14'"):
        load_concept(path, other)
    assert other._dino is None


def test_random_weights_concept_loads_without_building(tmp_path):
    torch.manual_seed(0)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    ref, mask = tiled_photo(72, 96, seed=50)
    path = save_concept(model.personalize(ref, mask, prior="matcher"), tmp_path / "r.persam")
    fresh = persam.load("sam_tiny", random_weights=True, device="cpu")
    assert load_concept(path, fresh).matcher.backbone_sha256 == "random" and fresh._dino is None
