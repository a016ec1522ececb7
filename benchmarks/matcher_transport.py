"""The matcher prior's transport scoring: one exact problem per mask with POT, against persam's scoring.

Usage: python benchmarks/matcher_transport.py ../shared/data/perseg-sample --object cat [--rounds 5]
       [--json benchmarks/results/matcher_transport.json]

Real photos, the tiny random SAM and a tiny random DINOv2 (as the oracle
test: random weights give full-size models degenerate masks whose cells are
all alike, so one transport problem; the tiny models give distinct ones).
Reference 00 of the object, target 01: the 154 candidate masks of the
authors' one-shot setting are decoded once, then, in interleaved rounds,
scored by (a) ``ot.emd2`` on every distinct problem in turn, float32 costs
as given (what persam did before) and (b) ``persam.method.matcher_select.emd_scores``.
Both must agree within 1e-6; the medians are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def pot_scores(similarity: torch.Tensor, pooled: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """The previous scoring: one ``ot.emd2`` per distinct problem, serially, float32 costs."""
    import ot

    cost = ((1 - similarity) / 2)[pooled].cpu()
    out, solved = torch.zeros(len(cells)), {}
    for i, c in enumerate(cells):
        key = c.numpy().tobytes()
        if key not in solved:
            m = cost[:, c].numpy()
            solved[key] = ot.emd2([1.0 / m.shape[0]] * m.shape[0], [1.0 / m.shape[1]] * m.shape[1], m)
        out[i] = 1 - solved[key]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="PerSeg-layout folder (Images/<object>/NN.jpg, Annotations/<object>/NN.png)")
    parser.add_argument("--object", default="cat")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()

    from PIL import Image

    import persam
    from persam.backends.dinov2 import create_dino
    from persam.jobs.machine import describe_machine
    from persam.method.matcher import match_patches, prompt_points
    from persam.method.matcher_select import decode_candidates, emd_scores
    from persam.session.matcher_prior import unit_features

    root = Path(args.root)
    ref = np.array(Image.open(root / "Images" / args.object / "00.jpg").convert("RGB"))
    mask = np.array(Image.open(root / "Annotations" / args.object / "00.png").convert("L")) > 0
    target = np.array(Image.open(root / "Images" / args.object / "01.jpg").convert("RGB"))
    torch.manual_seed(0)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    model._dino = create_dino("dinov2_vits14", random_weights=True, device="cpu", architecture=TINY)
    concept = model.personalize(ref, mask, prior="matcher")
    reference = concept.matcher
    features = unit_features(model, target)
    matches = match_patches(reference, features)
    _, samples = prompt_points(matches, reference.settings)
    cands = decode_candidates(model.backend, model.encode(target), samples, matches.points, reference.settings)
    sim, pooled, cells = matches.similarity, reference.pooled, cands.cells
    distinct = len({c.numpy().tobytes() for c in cells})
    sizes = cells.sum(1).float()

    times: dict[str, list[float]] = {"pot_s": [], "persam_s": []}
    worst = 0.0
    for round_ in range(args.rounds + 1):  # round 0 warms up
        start = time.perf_counter()
        old = pot_scores(sim, pooled, cells)
        mid = time.perf_counter()
        new = emd_scores(sim, pooled, cells)
        end = time.perf_counter()
        worst = max(worst, float((old - new).abs().max()))
        if round_:
            times["pot_s"].append(mid - start)
            times["persam_s"].append(end - mid)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": " ".join(["python", "benchmarks/matcher_transport.py", *sys.argv[1:]]),
        "machine": describe_machine("cpu"),
        "object": args.object,
        "photo_hw": list(target.shape[:2]),
        "masks": len(cells),
        "distinct_problems": distinct,
        "reference_cells": int(pooled.sum()),
        "mask_cells_median": float(sizes.median()),
        "equal_size_problems": int((sizes == pooled.sum()).sum()),
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        **med,
        "speedup": med["pot_s"] / med["persam_s"],
        "max_abs_difference": worst,
    }
    print(
        f"{distinct} distinct transport problems ({int(pooled.sum())} reference cells x median "
        f"{float(sizes.median()):.0f} mask cells): POT one by one {med['pot_s'] * 1000:.0f} ms, persam "
        f"{med['persam_s'] * 1000:.0f} ms ({result['speedup']:.2f} x), max |difference| {worst:.2e}"
    )
    if worst > 1e-6:
        print("the two scorings differ by more than 1e-6", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


TINY = {"embed_dim": 48, "depth": 2, "num_heads": 2}

if __name__ == "__main__":
    raise SystemExit(main())
