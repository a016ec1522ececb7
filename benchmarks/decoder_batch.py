"""The decoder batched across photos against photo by photo: seconds per photo of PerSAM's three passes.

Usage: python benchmarks/decoder_batch.py [--photos 8] [--rounds 5] [--threads 1] [--finetune]
       [--profile] [--json FILE]

Random-weight MobileSAM (vit_t) decoder on ``--photos`` random (1, 256, 64, 64) embeddings of 1024-px
photos; PerSAM (or PerSAM-F with ``--finetune``) run photo by photo and in groups of 2, 4 and all photos
(``segment_persam_photos``: each stage one decoder call over the group), in interleaved rounds with
``--threads`` torch threads (the default executor gives each of its two workers one). Medians of the
rounds, seconds per photo; ``--json FILE`` writes them with the command and the machine. ``--profile``
also runs the photos once more one by one under PyTorch's profiler and reports, per photo, the time of all
operators and of the matrix products alone (``MATRIX_OPS``), and the products' GFLOP/s (the profiler's
FLOP counts over their time): how much of a photo's decoding is arithmetic already at the core's pace.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

#: The operators that are matrix products (the profiler counts their FLOPs).
MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::baddbmm", "aten::bmm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune", action="store_true", help="PerSAM-F (weights 1/3 each) instead of PerSAM")
    parser.add_argument("--profile", action="store_true", help="also the matrix products' share under the profiler")
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    args = parser.parse_args()

    import torch

    from persam.backends import create_backend
    from persam.backends.base import EncodedImage
    from persam.method.persam import segment_persam_photos
    from persam.method.persam_f import segment_persam_f_photos
    from persam.method.settings import PersamSettings
    from persam.method.target import TargetFeatures

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backend = create_backend("vit_t", random_weights=True, device="cpu")
    geometry = backend.geometry((1024, 1024))
    photos = [EncodedImage(torch.randn(1, 256, 64, 64), geometry) for _ in range(args.photos)]
    target = TargetFeatures.from_cells([torch.randn(20, 256)])
    weights = torch.full((3,), 1 / 3)

    def run(group: list[EncodedImage]) -> None:
        if args.finetune:
            segment_persam_f_photos(backend, group, target, weights)
        else:
            segment_persam_photos(backend, group, target, PersamSettings())

    sizes = sorted({1, 2, 4, args.photos})
    arms = {size: [photos[i : i + size] for i in range(0, args.photos, size)] for size in sizes}
    for groups in arms.values():  # warm-up
        for group in groups:
            run(group)
    per_photo: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size, groups in arms.items():
            start = time.perf_counter()
            for group in groups:
                run(group)
            per_photo[size].append((time.perf_counter() - start) / args.photos)
    medians = {size: statistics.median(v) for size, v in per_photo.items()}
    method = "persam-f" if args.finetune else "persam"
    print(f"{method}, vit_t random weights, {args.threads} thread(s), medians of {args.rounds} interleaved rounds")
    for size, seconds in medians.items():
        print(f"  groups of {size}: {seconds:.4f} s/photo  rounds {[round(s, 4) for s in per_photo[size]]}")
    profiled = profile(run, photos) if args.profile else None
    if profiled is not None:
        print(
            f"  profiled photo by photo: {profiled['ops_s_per_photo']:.4f} s/photo in operators, of which matrix "
            f"products {profiled['matrix_s_per_photo']:.4f} s ({100 * profiled['matrix_share']:.0f} %) at "
            f"{profiled['matrix_gflops']:.1f} GFLOP/s"
        )
    if args.json:
        from persam.jobs.machine import write_results

        figures = {
            "method": method,
            "photos": args.photos,
            "rounds": args.rounds,
            "threads": args.threads,
            "seconds_per_photo_median": {f"groups of {k}": v for k, v in medians.items()},
            "seconds_per_photo_rounds": {f"groups of {k}": v for k, v in per_photo.items()},
        }
        if profiled is not None:
            figures["profile_photo_by_photo"] = profiled
        command = shlex.join(["python", "benchmarks/decoder_batch.py", *sys.argv[1:]])
        write_results(args.json, command, figures, device="cpu")


def profile(run, photos: list) -> dict[str, float]:
    """One photo-by-photo run under PyTorch's profiler: per-photo operator and matrix-product seconds."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for photo in photos:
            run([photo])
    events = prof.key_averages()
    ops_us = sum(e.self_cpu_time_total for e in events)
    matrix = [e for e in events if e.key in MATRIX_OPS]
    matrix_us = sum(e.self_cpu_time_total for e in matrix)
    flops = sum(e.flops for e in matrix)
    n = len(photos)
    return {
        "ops_s_per_photo": ops_us / 1e6 / n,
        "matrix_s_per_photo": matrix_us / 1e6 / n,
        "matrix_share": matrix_us / ops_us,
        "matrix_gflops": flops / (matrix_us / 1e6) / 1e9,
    }


if __name__ == "__main__":
    main()
