"""Speed of the video protocol beyond the image encoder, on synthetic frames."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from persam.jobs.timing import median_seconds

if TYPE_CHECKING:
    from persam.session.photo import PersamModel

COLOURS = ((215, 60, 45), (40, 90, 210), (60, 190, 70), (230, 200, 40), (170, 60, 200))


def synthetic_clip_frame(long_side: int, n_objects: int, shift: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured (round(0.75 N), N) frame with ``n_objects`` coloured ellipses.

    Args:
        long_side: width N.
        n_objects: ellipses, ids 1..n, spread along a diagonal.
        shift: pixels every object is moved right (a later frame).
        seed: texture seed.

    Returns:
        (H, W, 3) uint8 RGB frame and its (H, W) uint8 label map.
    """
    if long_side < 32 or n_objects < 1:
        raise ValueError("long_side must be at least 32 and n_objects at least 1")
    w, h = int(long_side), int(round(0.75 * long_side))
    rng = np.random.default_rng(seed)
    tiles = rng.integers(70, 170, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    frame = np.kron(tiles, np.ones((16, 16, 1), dtype=np.uint8))[:h, :w].copy()
    labels = np.zeros((h, w), dtype=np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    for i in range(n_objects):
        cx = (i + 0.5) / n_objects * w + shift
        cy = (0.3 + 0.4 * i / max(n_objects - 1, 1)) * h
        inside = ((x - cx) / (0.35 * w / n_objects)) ** 2 + ((y - cy) / (0.15 * h)) ** 2 <= 1.0
        frame[inside] = COLOURS[i % len(COLOURS)]
        labels[inside] = i + 1
    return frame, labels


def video_frame_runner(model: "PersamModel", n_objects: int = 3, size: int = 1024) -> Callable[[], object]:
    """A callable that runs the PerSAM video protocol on one encoded frame.

    A ``VideoSession`` is started on a synthetic first frame; the later frame
    is encoded once here. Each call is ``VideoSession.predict`` on it:
    similarity and top-k points, the frame's shared decoder products, the
    three decoder stages for all objects, the full-resolution merge and the
    next boxes, i.e. a frame's cost beyond the encoder.

    Args:
        model: a ``persam.session.photo.PersamModel``.
        n_objects: objects in the synthetic clip.
        size: frame width N (frames are N x round(0.75 N)).
    """
    from persam.session.video import VideoSession

    frame0, labels0 = synthetic_clip_frame(size, n_objects)
    frame1, _ = synthetic_clip_frame(size, n_objects, shift=size // 64)
    session = VideoSession(model, frame0, labels0)
    encoded = model.backend.encode(frame1)

    def run() -> object:
        encoded.forget_derived()  # the frame's per-image products are part of its cost
        return session.predict(encoded)

    return run


def video_frame_extra_s(model: "PersamModel", n_objects: int = 3, size: int = 1024, runs: int = 5) -> float:
    """Median seconds per frame beyond the encoder (``video_frame_runner``), after one warm-up run.

    Args:
        model: a ``persam.session.photo.PersamModel``.
        n_objects: objects in the synthetic clip.
        size: frame width N (frames are N x round(0.75 N)).
        runs: timed runs (at least 1).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    run = video_frame_runner(model, n_objects, size)
    return median_seconds(run, model.backend.device, runs=runs, warmup=1)
