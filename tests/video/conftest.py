"""Synthetic clips for the video tests: coloured shapes moving over a textured background."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from persam.jobs.synthetic import tiled_texture

COLOURS = {1: (220, 40, 40), 2: (40, 70, 220), 3: (50, 200, 60)}


@dataclass
class Clip:
    """frames: list of (H, W, 3) uint8; labels: list of (H, W) uint8 ground truth."""

    frames: list[np.ndarray]
    labels: list[np.ndarray]


def make_clip(n_frames: int = 6, h: int = 96, w: int = 128, n_objects: int = 3, seed: int = 0) -> Clip:
    """Object 1 (red square) moves right and leaves the frame; 2 (blue disc) drifts down; 3 (green bar) moves left."""
    background = tiled_texture((h, w), np.random.default_rng(seed), tile=8, low=70, high=160)
    yy, xx = np.mgrid[0:h, 0:w]
    frames, labels = [], []
    for t in range(n_frames):
        img, lab = background.copy(), np.zeros((h, w), dtype=np.uint8)
        x0 = 10 + t * (w // max(n_frames - 2, 1))  # leaves the frame before the end
        shapes = {
            1: (yy >= 12) & (yy < 36) & (xx >= x0) & (xx < x0 + 24),
            2: (yy - (50 + 2 * t)) ** 2 + (xx - 64) ** 2 <= 13**2,
            3: (yy >= 70) & (yy < 86) & (xx >= 90 - 3 * t) & (xx < 122 - 3 * t),
        }
        for oid in range(1, n_objects + 1):
            img[shapes[oid]] = COLOURS[oid]
            lab[shapes[oid]] = oid
        frames.append(img)
        labels.append(lab)
    return Clip(frames, labels)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and do not suffer from a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip() -> Clip:
    return make_clip()


@pytest.fixture(scope="module")
def clip_factory():
    """``make_clip`` itself, for tests that need other sizes or lengths."""
    return make_clip
