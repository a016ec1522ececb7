"""Speed and memory of SAM 2's tracker (``persam bench --tracker sam2``) on a synthetic clip.

A clip of ``frames`` synthetic frames (``synthetic_clip_frame``: ``n_objects``
flat ellipses on tiles, moving right by N/64 pixels a frame) is tracked from
its first label map with ``persam.session.tracker.SamTracker``. Frame 0
(seeding: one encode, one mask input per object) is timed apart; a tracked
frame's time is the wall time from one frame's output to the next
(decoding the synthetic frame excepted: the frames are made beforehand),
i.e. the image encoder, memory attention, the decoder and the memory encoder
for every object, device synchronised.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from statistics import median
from typing import TYPE_CHECKING

from persam.errors import OptionsError
from persam.jobs.bench import peak_rss_mb
from persam.jobs.synthetic import synthetic_clip_frame
from persam.jobs.timing import stopwatch

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


@dataclass(frozen=True)
class TrackerBench:
    """What ``bench_tracker`` measured.

    Attributes:
        model: SAM 2 model name; random_weights: whether it ran without weights.
        device: where it ran; threads: torch CPU threads; torch_version.
        frame_hw: (H, W) of the clip; input_size: the model's square input S.
        objects: tracked objects; frames: frames in the clip (the first one seeds).
        seed_s: seconds for frame 0; frame_s: median seconds per tracked frame (frames 1..);
        frame_times_s: every tracked frame's seconds, in order.
        state_mb: tensors the predictor holds for the clip at the end (MiB; bounded by the memory window).
        peak_rss_mb: peak resident memory of the process (MiB); peak_device_mb: CUDA peak allocated, or None.
    """

    model: str
    random_weights: bool
    device: str
    threads: int
    torch_version: str
    frame_hw: tuple[int, int]
    input_size: int
    objects: int
    frames: int
    seed_s: float
    frame_s: float
    frame_times_s: tuple[float, ...]
    state_mb: float
    peak_rss_mb: float
    peak_device_mb: float | None
    machine: str = platform.machine()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def bench_tracker(
    predictor: nn.Module, model: str, *, random_weights: bool, n_objects: int = 3, size: int = 1024, frames: int = 6
) -> TrackerBench:
    """Track a synthetic clip and time each frame (see the module docstring).

    Args:
        predictor: ``SAM2VideoPredictor`` (``persam.session.video_predictor.load_video_predictor``).
        model, random_weights: recorded in the result.
        n_objects: objects in the clip (at least 1).
        size: frame width N (frames are N x round(0.75 N)).
        frames: frames in the clip (at least 2).
    """
    import torch

    from persam.session.tracker import SamTracker

    if frames < 2:
        raise OptionsError(f"the clip needs at least 2 frames (one seeds the tracker), got {frames}")
    clip = [synthetic_clip_frame(size, n_objects, shift=t * max(1, size // 64)) for t in range(frames)]
    first = clip[0][1]
    masks = {oid: first == oid for oid in range(1, n_objects + 1)}
    device = predictor.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tracker = SamTracker(predictor, (frame for frame, _ in clip), masks, count=frames)
    stream = tracker.run()
    times = []
    with stopwatch(device) as lap:
        next(stream)
    seed = lap.seconds
    for _ in range(frames - 1):
        with stopwatch(device) as lap:
            next(stream)
        times.append(lap.seconds)
    stream.close()
    peak_device = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return TrackerBench(
        model=model,
        random_weights=random_weights,
        device=str(device),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        frame_hw=tuple(first.shape),
        input_size=int(predictor.image_size),
        objects=n_objects,
        frames=frames,
        seed_s=seed,
        frame_s=median(times),
        frame_times_s=tuple(times),
        state_mb=tracker.state_bytes() / 2**20,
        peak_rss_mb=peak_rss_mb(),
        peak_device_mb=peak_device,
    )


def format_tracker_bench(result: TrackerBench) -> str:
    """The result in a few lines (milliseconds)."""
    h, w = result.frame_hw
    weights = "random weights" if result.random_weights else "trained weights"
    lines = [
        f"persam bench --tracker sam2: {result.model} ({weights}, input {result.input_size}), {w}x{h} frames, "
        f"{result.objects} objects, on {result.device}, torch {result.torch_version}, {result.threads} threads",
        f"{'first frame (seeding from masks)':<40} {result.seed_s * 1000:10.1f} ms",
        f"{'tracked frame, median of ' + str(len(result.frame_times_s)):<40} {result.frame_s * 1000:10.1f} ms",
        f"{'  per object':<40} {result.frame_s * 1000 / result.objects:10.1f} ms",
        f"{'predictor state at the end':<40} {result.state_mb:10.1f} MB",
        f"{'peak resident memory':<40} {result.peak_rss_mb:10.0f} MB",
    ]
    if result.peak_device_mb is not None:
        lines.append(f"{'peak CUDA memory allocated':<40} {result.peak_device_mb:10.0f} MB")
    return "\n".join(lines)
