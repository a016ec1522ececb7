"""Speed of the video protocol beyond the image encoder, on synthetic frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from persam.errors import OptionsError
from persam.jobs.synthetic import synthetic_clip_frame
from persam.jobs.timing import median_seconds

if TYPE_CHECKING:
    from persam.session.photo import PersamModel


def video_frame_runner(model: PersamModel, n_objects: int = 3, size: int = 1024) -> Callable[[], object]:
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


def video_frame_extra_s(model: PersamModel, n_objects: int = 3, size: int = 1024, runs: int = 5) -> float:
    """Median seconds per frame beyond the encoder (``video_frame_runner``), after one warm-up run.

    Args:
        model: a ``persam.session.photo.PersamModel``.
        n_objects: objects in the synthetic clip.
        size: frame width N (frames are N x round(0.75 N)).
        runs: timed runs (at least 1).
    """
    if runs < 1:
        raise OptionsError(f"runs must be at least 1, got {runs}")
    run = video_frame_runner(model, n_objects, size)
    return median_seconds(run, model.backend.device, runs=runs, warmup=1)
