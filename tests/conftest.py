"""Shared fixtures: a tiny random-weight SAM and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "perseg-sample"


def synthetic_photo(h: int = 180, w: int = 240, seed: int = 0, center: tuple[float, float] = (0.5, 0.45)) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 textured photo with a red ellipse, and the ellipse's (H, W) bool mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 120 + 60).astype(np.uint8)
    image = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w].copy()
    cy, cx = center[0] * h, center[1] * w
    mask = ((yy - cy) / (0.22 * h)) ** 2 + ((xx - cx) / (0.18 * w)) ** 2 <= 1
    image[mask] = (220, 30, 40)
    return image, mask


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
