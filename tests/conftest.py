"""Shared fixtures: a tiny random-weight SAM and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from persam.jobs.synthetic import tiled_photo

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "perseg-sample"


#: (H, W, 3) uint8 textured photo with a red ellipse, and the ellipse's (H, W) bool mask.
synthetic_photo = tiled_photo


@pytest.fixture(scope="session")
def tiny_model():
    """A session over the tiny SAM (official module classes, seeded random weights)."""
    import persam

    torch.manual_seed(0)
    return persam.load("sam_tiny", random_weights=True, device="cpu")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A full state dict of the tiny SAM written as an official-layout checkpoint."""
    from persam.backends.builders import write_random_checkpoint

    return write_random_checkpoint("sam_tiny", tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth", seed=0)


@pytest.fixture
def photo():
    return synthetic_photo()
