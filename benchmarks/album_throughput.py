"""Album throughput: `persam index` (latency and throughput encoder modes) against `persam segment --index`
(photo by photo and decoded in groups), in interleaved rounds, with the masks compared.

Usage: python benchmarks/album_throughput.py [--photos 100] [--rounds 3] [--size 1024]
       [--precision fp32|bf16] [--runtime torch|openvino|onnxruntime] [--batch 8] [--floor]
       [--workdir DIR] [--json FILE] [-- EXTRA persam segment OPTIONS]

Writes ``--photos`` synthetic JPEG photos (textured background, a red ellipse at a varying place) and a
seeded random-weight MobileSAM checkpoint, saves a PerSAM concept learnt on one extra photo, then runs,
as separate processes (start-up included, the way a user runs them), ``--rounds`` interleaved rounds of:

* ``persam index PHOTOS --dtype float32 --encode latency`` (one photo at a time: the encoder as before);
* ``persam index PHOTOS --dtype float32 --encode throughput`` (the runtime's throughput mode);
* ``persam segment --index --concept`` photo by photo (``--batch 1``, the default);
* the same with ``--batch N`` (each PerSAM stage one decoder call over N photos);
* with ``--floor``: ``decoder_floor.py``'s matrix products of the photos' decoder passes alone on two
  threads, and ``python -c "import torch"``; their sum is the least that ``segment --index`` of the photos
  could take with PyTorch's kernels (files, PerSAM's other operators and the rest of start-up not counted).

Medians over the rounds are reported. Masks are compared as IoU (smallest over the photos): the batched
run against photo by photo; segmenting the throughput-mode index against the latency-mode one; and a
direct ``persam segment --concept`` of the first ten photos (encoder in the segment run) against the
index (float32 embeddings, so the difference is float rounding only: PyTorch's encoder runs with the
workers' share of the threads there). ``--json FILE`` also writes the figures with the command and the
machine (``persam.jobs.machine``), as the results files under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
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


def _floor(photos: int, work: Path, r: int) -> float:
    """``decoder_floor.py``'s seconds for ``photos`` photos' decoder products alone on two threads."""
    import json

    out = work / f"floor_{r}.json"
    script = Path(__file__).with_name("decoder_floor.py")
    per_thread = max(1, photos // 2)
    subprocess.run([sys.executable, str(script), "--photos", str(per_thread), "--rounds", "1", "--album", str(photos),
                    "--products-only", "--json", str(out)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return json.loads(out.read_text(encoding="utf-8"))["album_seconds_two_threads"]["products alone"]


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array(Image.open(p)) > 0 for p in sorted(folder.glob("*.png"))}


def _min_iou(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The smallest IoU over the photos of ``b`` (each found in ``a``)."""
    worst = 1.0
    for name, mask in b.items():
        union = int((a[name] | mask).sum())
        worst = min(worst, 1.0 if union == 0 else int((a[name] & mask).sum()) / union)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument(
        "--runtime",
        default="openvino",
        choices=["torch", "openvino", "onnxruntime"],
        help="the image encoder's runtime for indexing, personalizing and the direct run",
    )
    parser.add_argument("--batch", type=int, default=8, help="photos decoded together in the batched segment run")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="each round also times the decoder's matrix products alone for the photos on two threads "
        "(decoder_floor.py) and `python -c 'import torch'`",
    )
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    parser.add_argument("extra", nargs="*", help="extra options for every `persam segment` run (after --)")
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
        concept = str(work / "c.persam")
        _persam("personalize", "--ref", str(work / "ref.jpg"), "--ref-mask", str(work / "ref.png"), "-o", concept,
                *model, *encode)  # fmt: skip
        times: dict[str, list[float]] = {"index latency": [], "index throughput": [], "segment": [], "batched": []}
        for r in range(args.rounds):
            for mode in ("latency", "throughput"):
                idx = work / f"album_{mode}_{r}.idx"
                seconds, _ = _persam("index", str(photos), "-o", str(idx), "--dtype", "float32", "--encode", mode,
                                     "--quiet", *model, *encode)  # fmt: skip
                times[f"index {mode}"].append(seconds)
            idx = str(work / f"album_throughput_{r}.idx")
            for name, batch in (("segment", "1"), ("batched", str(args.batch))):
                seconds, _ = _persam("segment", "--index", idx, "--concept", concept, "-o", str(work / f"{name}_{r}"),
                                     "--batch", batch, "--quiet", *model, *args.extra)  # fmt: skip
                times[name].append(seconds)
            if args.floor:
                times.setdefault("products floor", []).append(_floor(args.photos, work, r))
                with stopwatch() as lap:
                    subprocess.run([sys.executable, "-c", "import torch"], check=True)
                times.setdefault("import torch", []).append(lap.seconds)
        _persam("segment", "--index", str(work / "album_latency_0.idx"), "--concept", concept,
                "-o", str(work / "from_latency_index"), "--quiet", *model, *args.extra)  # fmt: skip
        first = sorted(photos.glob("*.jpg"))[:10]
        direct_s, _ = _persam("segment", "--concept", concept, *map(str, first), "-o", str(work / "direct"),
                              "--quiet", *model, *encode, *args.extra)  # fmt: skip
        photo_by_photo = _masks(work / "segment_0")
        iou = {
            "batched_vs_photo_by_photo": _min_iou(photo_by_photo, _masks(work / "batched_0")),
            "throughput_index_vs_latency_index": _min_iou(photo_by_photo, _masks(work / "from_latency_index")),
            "direct_vs_index": _min_iou(photo_by_photo, _masks(work / "direct")),
        }
        med = {k: statistics.median(v) for k, v in times.items()}
        n = args.photos
        index_s = min(med["index latency"], med["index throughput"])
        segment_s = min(med["segment"], med["batched"])
        print(f"{n} photos {args.size}px, vit_t random weights, {args.precision}, encoder runtime {args.runtime}, "
              f"medians of {args.rounds} interleaved rounds (start-up included)")  # fmt: skip
        runs = ("index latency", "index throughput", "segment", "batched")
        for name, seconds in med.items():
            rate = f"  ({n / seconds:.2f} photos/s)" if name in runs else ""
            print(f"  {name:<18} {seconds:7.1f} s{rate}  rounds {times[name]}")
        print(f"  index (faster mode) / segment --index (faster): {index_s / segment_s:.2f} x")
        if args.floor:
            bound = med["products floor"] + med["import torch"]
            print(f"  segment --index at best (products on two threads + importing PyTorch): {bound:.1f} s; "
                  f"a tenth of the index: {index_s / 10:.1f} s")  # fmt: skip
        print(f"  direct segment of {len(first)} photos: {direct_s:.1f} s")
        print(f"  smallest mask IoU (index float32): {iou}")
        if args.json:
            from persam.jobs.machine import write_results

            figures = {
                "photos": n,
                "rounds": args.rounds,
                "image_size": args.size,
                "precision": args.precision,
                "runtime": args.runtime,
                "index_dtype": "float32",
                "batch": args.batch,
                "seconds_median": med,
                "seconds_rounds": times,
                "photos_per_s_median": {k: n / v for k, v in med.items() if k in runs},
                "index_over_segment_index": index_s / segment_s,
                "index_throughput_over_latency_photos_per_s": med["index latency"] / med["index throughput"],
                "direct_photos": len(first),
                "segment_direct_s": direct_s,
                "min_mask_iou": iou,
            }
            if args.floor:
                figures["segment_index_lower_bound_s"] = med["products floor"] + med["import torch"]
            command = shlex.join(["python", "benchmarks/album_throughput.py", *sys.argv[1:]])
            write_results(args.json, command, figures, device="cpu")


if __name__ == "__main__":
    main()
