"""IoU between fp32 and bf16 masks on a PerSeg-layout folder.

Usage: python benchmarks/bf16_agreement.py ../shared/data/perseg-sample [--checkpoint FILE]

Without --checkpoint, a seeded random-weight MobileSAM is written to a
temporary file and used for both precisions.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import persam
from persam.backends.builders import write_random_checkpoint
from persam.eval.perseg import PerSegDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = str(write_random_checkpoint("vit_t", Path(tmp) / "mobile_sam_random.pt", seed=0))
        models = {p: persam.load("vit_t", ckpt, device="cpu", precision=p) for p in ("fp32", "bf16")}
        worst = 1.0
        for obj in PerSegDataset(args.root).objects:
            for finetune in (False, True):
                concepts = {p: m.personalize(obj.ref_image, obj.ref_mask, finetune=finetune) for p, m in models.items()}
                for image in obj.test_images:
                    a, b = (concepts[p].segment(image).mask for p in ("fp32", "bf16"))
                    iou = (a & b).sum() / max((a | b).sum(), 1)
                    worst = min(worst, iou)
                    print(f"{obj.name:<20} {'persam-f' if finetune else 'persam':<9} {Path(image).name}  IoU {iou:.4f}")
        print(f"lowest IoU fp32 vs bf16: {worst:.4f}")


if __name__ == "__main__":
    main()
