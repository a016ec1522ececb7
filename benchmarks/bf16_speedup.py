"""bf16 against fp32 on one machine at the same time: encoder + PerSAM per photo.

Usage: python benchmarks/bf16_speedup.py [--runs 15] [--image-size 1024]

Loads a seeded random-weight MobileSAM twice (fp32 and bf16) in one process
and times, in alternating rounds (so a slow spell of a shared machine hits
both alike), ``backend.encode(photo)`` and ``concept.segment(encoded)`` of a
training-free PerSAM concept, each after a warm-up. Prints the medians and
the speed-up of encoder + PerSAM.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import persam
from persam.backends.builders import write_random_checkpoint
from persam.jobs.synthetic import synthetic_photo
from persam.jobs.timing import seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=1024)
    args = parser.parse_args()
    ref, ref_mask = synthetic_photo(args.image_size, seed=0, center=(0.42, 0.52))
    target, _ = synthetic_photo(args.image_size, seed=1, center=(0.6, 0.45), axes=(0.18, 0.24))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_random_checkpoint("vit_t", Path(tmp) / "mobile_sam_random.pt", seed=0)
        stages = {}
        for precision in ("fp32", "bf16"):
            model = persam.load("vit_t", ckpt, device="cpu", precision=precision)
            concept = model.personalize(ref, ref_mask)
            encoded = model.backend.encode(target)
            stages[f"{precision} encoder"] = lambda b=model.backend: b.encode(target)
            stages[f"{precision} PerSAM"] = lambda c=concept, e=encoded: c.segment(e)
        times: dict[str, list[float]] = {name: [] for name in stages}
        for round_ in range(args.runs + 1):
            for name, fn in stages.items():
                elapsed = seconds(fn, "cpu")
                if round_:
                    times[name].append(elapsed)
    med = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, ms in med.items():
        print(f"{name:<14} {ms:8.1f} ms")
    total = {p: med[f"{p} encoder"] + med[f"{p} PerSAM"] for p in ("fp32", "bf16")}
    print(
        f"encoder + PerSAM: fp32 {total['fp32']:.0f} ms, bf16 {total['bf16']:.0f} ms, "
        f"speed-up {total['fp32'] / total['bf16']:.2f}x (encoder alone "
        f"{med['fp32 encoder'] / med['bf16 encoder']:.2f}x)"
    )


if __name__ == "__main__":
    main()
