"""Album throughput: `persam segment --index` against segmenting the photos directly.

Usage: python benchmarks/album_throughput.py [--photos 100] [--size 1024] [--precision fp32|bf16]
       [--runtime torch|openvino|onnxruntime] [--workdir DIR] [--json FILE]
       [-- EXTRA persam segment OPTIONS]

Writes ``--photos`` synthetic JPEG photos (textured background, a red
ellipse at a varying place) and a seeded random-weight MobileSAM checkpoint,
indexes the photos with ``persam index`` (float32 embeddings, so masks can be
compared bit for bit), saves a PerSAM concept learnt on one extra photo, then
times, as separate processes (start-up included, the way a user runs them):

* ``persam segment --index album.idx --concept c.persam`` on all photos;
* ``persam segment --concept c.persam PHOTOS`` (encoder on every photo) on the
  first ten photos, for the per-photo cost without an index;

and checks that the masks of the ten photos are identical in both runs. ``--json FILE`` also
writes the figures with the command and the machine (``persam.jobs.machine``), as the results
files under ``benchmarks/results/`` that the docs' performance page shows.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from persam.backends.builders import write_random_checkpoint
from persam.jobs.synthetic import synthetic_photo
from persam.jobs.timing import stopwatch


def _persam(*args: str) -> tuple[float, str]:
    """Run ``python -m persam ARGS``: (wall seconds, its stdout)."""
    with stopwatch() as lap:
        done = subprocess.run([sys.executable, "-m", "persam", *args], check=True, stdout=subprocess.PIPE, text=True)
    return lap.seconds, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument(
        "--runtime",
        default="torch",
        choices=["torch", "openvino", "onnxruntime"],
        help="the image encoder's runtime for indexing, personalizing and the direct run",
    )
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    parser.add_argument("extra", nargs="*", help="extra options for both `persam segment` runs (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        photos = work / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(args.photos):
            image, _ = synthetic_photo(args.size, seed=100 + i, center=tuple(rng.uniform(0.3, 0.7, size=2)))
            Image.fromarray(image).save(photos / f"{i:04d}.jpg", quality=90)
        ref, ref_mask = synthetic_photo(args.size, seed=0)
        Image.fromarray(ref).save(work / "ref.jpg", quality=95)
        Image.fromarray(ref_mask.astype(np.uint8) * 255).save(work / "ref.png")
        ckpt = write_random_checkpoint("vit_t", work / "mobile_sam_random.pt", seed=0)
        model = ["--model", "vit_t", "--checkpoint", str(ckpt), "--device", "cpu"]
        # the encoder's options; segmenting from the index encodes nothing and refuses them
        encode = ["--precision", args.precision] + ([] if args.runtime == "torch" else ["--runtime", args.runtime])
        index_s, index_out = _persam(
            "index", str(photos), "-o", str(work / "album.idx"), "--dtype", "float32", *model, *encode
        )
        _persam(
            "personalize",
            "--ref",
            str(work / "ref.jpg"),
            "--ref-mask",
            str(work / "ref.png"),
            "-o",
            str(work / "c.persam"),
            *model,
            *encode,
        )
        album_s, _ = _persam(
            "segment",
            "--index",
            str(work / "album.idx"),
            "--concept",
            str(work / "c.persam"),
            "-o",
            str(work / "out_index"),
            *model,
            *args.extra,
        )
        first = sorted(photos.glob("*.jpg"))[:10]
        direct_s, _ = _persam(
            "segment",
            "--concept",
            str(work / "c.persam"),
            *map(str, first),
            "-o",
            str(work / "out_direct"),
            *model,
            *encode,
            *args.extra,
        )
        same = all(
            np.array_equal(
                np.array(Image.open(work / "out_index" / f"{p.stem}.png")),
                np.array(Image.open(work / "out_direct" / f"{p.stem}.png")),
            )
            for p in first
        )
        n = args.photos
        print(f"{n} photos {args.size}px, vit_t random weights, {args.precision}, encoder runtime {args.runtime}")
        print(f"persam index:            {index_s:7.1f} s  ({index_out})")
        print(f"persam segment --index:  {album_s:7.1f} s  ({n / album_s:.2f} photos/s, start-up included)")
        print(
            f"persam segment (direct): {direct_s:7.1f} s for {len(first)} photos ({len(first) / direct_s:.2f} photos/s)"
        )
        print(f"masks of the first {len(first)} photos identical (index vs direct): {same}")
        if args.json:
            from persam.jobs.machine import write_results

            figures = {
                "photos": n,
                "image_size": args.size,
                "precision": args.precision,
                "runtime": args.runtime,
                "index_s": index_s,
                "segment_index_s": album_s,
                "segment_index_photos_per_s": n / album_s,
                "direct_photos": len(first),
                "segment_direct_s": direct_s,
                "segment_direct_photos_per_s": len(first) / direct_s,
                "masks_identical": same,
            }
            command = shlex.join(["python", "benchmarks/album_throughput.py", *sys.argv[1:]])
            write_results(args.json, command, figures, device="cpu")


if __name__ == "__main__":
    main()
