"""IoU between masks from float32 embeddings and float16-stored ones (the album index default).

Usage: python benchmarks/float16_index_agreement.py ../shared/data/perseg-sample [--checkpoint FILE]

Each object's reference 00 makes a concept; every photo of the folder is
segmented from its float32 embedding and from the same embedding rounded to
float16. Without --checkpoint, a seeded random-weight MobileSAM is used.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import persam
import persam.io
from persam.backends import EncodedImage
from persam.backends.builders import write_random_checkpoint
from persam.eval.perseg import PerSegDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    dataset = PerSegDataset(args.root)
    photos = [p for obj in dataset.objects for p in (obj.ref_image, *obj.test_images)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = str(write_random_checkpoint("vit_t", Path(tmp) / "mobile_sam_random.pt", seed=0))
        model = persam.load("vit_t", ckpt, device="cpu")
        encoded = {p: model.backend.encode(persam.io.load_image(p)) for p in photos}
        for finetune in (False, True):
            ious = []
            for obj in dataset.objects:
                concept = model.personalize(encoded[obj.ref_image], obj.ref_mask, finetune=finetune)
                for p in photos:
                    e = encoded[p]
                    half = EncodedImage(embedding=e.embedding.half().float(), geometry=e.geometry)
                    a, b = concept.segment(e).mask, concept.segment(half).mask
                    ious.append((a & b).sum() / max((a | b).sum(), 1))
            name = "persam-f" if finetune else "persam"
            print(
                f"{name:<9} float16 vs float32 embeddings over {len(ious)} masks: min IoU {min(ious):.4f}, "
                f"median {np.median(ious):.4f}"
            )


if __name__ == "__main__":
    main()
