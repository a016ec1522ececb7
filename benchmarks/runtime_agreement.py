"""IoU of masks through each inference runtime and precision against PyTorch fp32, on a PerSeg-layout folder.

Usage: python benchmarks/runtime_agreement.py ../shared/data/perseg-sample [--model vit_t]
           [--checkpoint FILE] [--runtime openvino:fp32 --runtime openvino:bf16 ...]

Without --checkpoint, a seeded random-weight model is written to a temporary
file and every configuration loads it. Each configuration learns its own
concept (PerSAM and PerSAM-F) from the reference through its own encoder, as a
user of that runtime would, and its target masks are compared with PyTorch fp32's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import persam
from persam.backends.builders import write_random_checkpoint
from persam.backends.runtime import RuntimeUnavailableError
from persam.eval.perseg import PerSegDataset
from persam.jobs.runtime_bench import REFERENCE, parse_config

DEFAULT = ("openvino:fp32", "openvino:bf16", "onnxruntime:fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--model", default="vit_t")
    parser.add_argument("--checkpoint")
    parser.add_argument("--runtime", action="append", help=f"RUNTIME:PRECISION (default: {', '.join(DEFAULT)})")
    args = parser.parse_args()
    configs = [parse_config(text) for text in (args.runtime or DEFAULT)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = str(write_random_checkpoint(args.model, Path(tmp) / f"{args.model}_random.pt", seed=0))
        models = {}
        for c in [REFERENCE, *configs]:
            try:
                models[c] = persam.load(args.model, ckpt, device="cpu", runtime=c[0], precision=c[1])
            except RuntimeUnavailableError as exc:  # e.g. bf16 on a CPU without bf16 arithmetic
                print(f"skipped {c[0]}:{c[1]}: {exc}")
        configs = [c for c in configs if c in models]
    worst = {c: 1.0 for c in configs}
    for obj in PerSegDataset(args.root).objects:
        for finetune in (False, True):
            concepts = {c: m.personalize(obj.ref_image, obj.ref_mask, finetune=finetune) for c, m in models.items()}
            for image in obj.test_images:
                ref = concepts[REFERENCE].segment(image).mask
                cells = []
                for c in configs:
                    mask = concepts[c].segment(image).mask
                    iou = float((ref & mask).sum() / max((ref | mask).sum(), 1))
                    worst[c] = min(worst[c], iou)
                    cells.append(f"{c[0]}:{c[1]} {iou:.4f}")
                print(
                    f"{obj.name:<20} {'persam-f' if finetune else 'persam':<9} {Path(image).name}  IoU "
                    + "  ".join(cells)
                )
    for c, iou in worst.items():
        print(f"lowest IoU {c[0]} {c[1]} vs torch fp32: {iou:.4f}")


if __name__ == "__main__":
    main()
