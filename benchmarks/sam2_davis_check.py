"""`persam eval davis --tracker sam2` against SAM 2's own video predictor, on a full-size SAM 2.1 model.

Usage: python benchmarks/sam2_davis_check.py [--model sam2.1_hiera_tiny] [--frames 3] [--size 320]

Writes a random-weight checkpoint of ``--model`` in Meta's layout, a
DAVIS-layout sequence of synthetic JPEG frames with two objects, runs
``persam eval davis ROOT --tracker sam2 --model M --checkpoint FILE -o DIR --json F``
in a subprocess, then runs the package's ``SAM2VideoPredictor`` independently
(``init_state`` on the JPEG folder, ``add_new_mask`` with the first
annotation, ``propagate_in_video``) and prints, per frame and object, the IoU
of persam's written label map against the official masks (merged as persam
documents: arg-max of the objects' logits against a zero background).
The test suite runs the same comparison on the reduced ``sam2_tiny``
architecture; a full-size tracked frame takes tens of seconds on a 2-core CPU.
Exit status 1 if any IoU is below 0.99.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=320, help="frame width (height 0.75 x)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from persam.backends.sam2_models import write_random_checkpoint
    from persam.io import save_label_map
    from persam.jobs.synthetic import synthetic_clip_frame
    from persam.session.video_predictor import load_video_predictor

    work = Path(tempfile.mkdtemp(prefix="sam2-davis-"))
    ckpt = write_random_checkpoint(args.model, work / f"{args.model}.pt", seed=0)
    root = work / "DAVIS"
    frames_dir, notes_dir = root / "JPEGImages" / "480p" / "pair", root / "Annotations" / "480p" / "pair"
    frames_dir.mkdir(parents=True)
    for t in range(args.frames):
        frame, labels = synthetic_clip_frame(args.size, 2, shift=2 * t)
        Image.fromarray(frame).save(frames_dir / f"{t:05d}.jpg", quality=95)
        save_label_map(notes_dir / f"{t:05d}.png", labels.astype(np.uint8))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("pair\n")

    out, report = work / "pred", work / "davis.json"
    cmd = [
        sys.executable,
        "-m",
        "persam.cli.main",
        "eval",
        "davis",
        str(root),
        "--tracker",
        "sam2",
        "--model",
        args.model,
        "--checkpoint",
        str(ckpt),
        "--device",
        "cpu",
        "-o",
        str(out),
        "--json",
        str(report),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"persam eval davis: {time.perf_counter() - start:.1f} s for {args.frames} frames")

    predictor, _ = load_video_predictor(args.model, str(ckpt), device="cpu")
    first = np.asarray(Image.open(notes_dir / "00000.png"))
    with torch.inference_mode():
        state = predictor.init_state(str(frames_dir))
        for oid in (1, 2):
            predictor.add_new_mask(state, 0, oid, torch.from_numpy(first == oid))
        official = {
            t: {int(o): logits[k, 0].float().numpy() for k, o in enumerate(ids)}
            for t, ids, logits in predictor.propagate_in_video(state)
        }
    worst = 1.0
    for t in range(args.frames):
        ids = sorted(official[t])
        stack = np.stack([official[t][o] for o in ids])
        expected = np.where(stack.max(0) > 0, np.array(ids)[stack.argmax(0)], 0)
        written = np.asarray(Image.open(out / "pair" / f"{t:05d}.png"))
        for oid in ids:
            a, b = written == oid, expected == oid
            union = np.logical_or(a, b).sum()
            iou = 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
            worst = min(worst, iou)
            print(f"frame {t} object {oid}: IoU {iou:.4f} ({int(b.sum())} official pixels)")
    print(json.dumps({k: v for k, v in json.loads(report.read_text()).items() if k in ("tracker", "J&F")}))
    print(f"worst IoU {worst:.4f}")
    return 0 if worst >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
