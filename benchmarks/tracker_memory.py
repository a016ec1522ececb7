"""Memory of SAM 2 tracking over a long synthetic clip: outputs older than the memory window dropped, or all kept.

Usage: python benchmarks/tracker_memory.py [--frames 300] [--size 320] [--model sam2_tiny] [--window N]

Tracks two objects of ``persam.jobs.synthetic.synthetic_clip_frame`` frames
(moving right and back every 40 frames) with random weights on the CPU,
one thread, and prints at frames 20, the middle and the last: the process's
peak resident memory and the tensors the predictor holds
(``SamTracker.state_bytes``). ``--window`` is the number of frames of
per-frame outputs kept (default: what the model reads); pass a number
larger than ``--frames`` to keep them all, as the predictor itself does.
Run each setting in its own process (peak memory is per process).
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=320, help="frame width (height 0.75 x)")
    parser.add_argument("--model", default="sam2_tiny")
    parser.add_argument("--window", type=int, help="frames of outputs kept (default: the model's reach)")
    args = parser.parse_args()

    import torch

    from persam.jobs.synthetic import synthetic_clip_frame
    from persam.session.tracker import SamTracker, TrackerSettings
    from persam.session.video_predictor import load_video_predictor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    predictor, _ = load_video_predictor(args.model, random_weights=True, device="cpu")

    def frames():
        for t in range(args.frames):
            yield synthetic_clip_frame(args.size, 2, shift=t % 40)[0]

    first = synthetic_clip_frame(args.size, 2)[1]
    tracker = SamTracker(
        predictor,
        frames(),
        {1: first == 1, 2: first == 2},
        count=args.frames,
        settings=TrackerSettings(memory_window=args.window),
    )
    marks = {20, args.frames // 2, args.frames - 1}
    start = time.perf_counter()
    for frame in tracker.run():
        if frame.index in marks:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"frame {frame.index:5d}: peak RSS {rss:7.0f} MB, predictor state "
                f"{tracker.state_bytes() / 2**20:7.2f} MB"
            )
    print(f"{args.frames} frames, window {tracker.window}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
