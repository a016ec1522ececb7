"""The part-aware prior against an independent restatement of the authors' P2SAM code.

``reference_oracle_parts`` follows the reference page with the PerSAM oracle's
predictor; these tests run both on the same frozen modules and compare the
reference cells, every part count's points and transport score, the chosen
count and the final mask. Where our point differs from the oracle's only by a
float-rounding tie on the full-resolution map, the oracle follows our point
(as in ``test_reference_agreement``).

Fast: the tiny random SAM on synthetic photos. Slow: a random-weight
MobileSAM on the PerSeg sample photos (skipped when they are absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extras import require, require_path

require("sklearn")
require("ot")

import persam  # noqa: E402
from persam.method.parts import part_prompt  # noqa: E402
from persam.method.settings import PersamSettings  # noqa: E402
from reference_oracle import OracleImage, ReferenceCrash  # noqa: E402
from reference_oracle_parts import PartCandidate, candidate, choose, reference_features  # noqa: E402
from test_reference_agreement import build_scene, iou, oracle_sam  # noqa: E402

MIN_IOU = 0.99
SIM_TOL = 1e-5
SCORE_RTOL = 1e-3  # features differ by float rounding (persam's encoder is re-associated)
DATA = next(
    (
        p / "shared" / "data" / "perseg-sample"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "data" / "perseg-sample").is_dir()
    ),
    Path("/nonexistent/perseg-sample"),
)


def is_extreme(point: np.ndarray, full_map: torch.Tensor, largest: bool) -> bool:
    x, y = (int(v) for v in point)
    value = float(full_map[y, x])
    return value >= float(full_map.max()) - SIM_TOL if largest else value <= float(full_map.min()) + SIM_TOL


def follow_candidate(test: OracleImage, features: torch.Tensor, n: int, ours: np.ndarray) -> tuple[PartCandidate, str]:
    """The oracle's count ``n``, from our points when they differ only by a tie."""
    oracle = candidate(test, features, n)  # a ReferenceCrash goes to ``compare``, which reports it
    for i, point in enumerate(ours):
        largest = i < n
        full_map = oracle.maps[i] if largest else oracle.mean_map
        assert is_extreme(point, full_map, largest), (
            f"parts {n}: point {i} {point.tolist()} vs oracle {oracle.points_xy[i].tolist()}"
        )
    if np.array_equal(ours, oracle.points_xy):
        return oracle, ""
    return candidate(test, features, n, points_xy=ours), f" (tie at parts {n})"


MAX_PARTS = 5  # the prior's default counts 1..5


def parts_reference_runs_on(oracle_ref: OracleImage, mask_rgb: np.ndarray) -> bool:
    """The property checked up front: the reference mask covers at least one cell per part (the authors' k-means
    needs ``n`` cells for ``n`` clusters)."""
    return reference_features(oracle_ref, mask_rgb).shape[0] >= MAX_PARTS


def compare(
    model, sam, ref: np.ndarray, annotation, mask_rgb: np.ndarray, target: np.ndarray, oracle_ref=None
) -> tuple[list[str], list[str]]:
    """(failures, report) for one reference/target pair with parts 1..5; a crash of the reference is a failure."""
    concept = model.personalize(ref, annotation, prior="part-aware")
    result = concept.segment(target)
    oracle_ref = oracle_ref or OracleImage(sam, ref, mask_rgb)
    features = reference_features(oracle_ref, mask_rgb)
    failures, report = [], []
    if concept.parts.cells.shape != features.shape:
        return [f"reference cells: {concept.parts.cells.shape[0]} vs oracle {features.shape[0]}"], report
    test = OracleImage(sam, target)
    encoded = model.encode(target)
    oracles, notes = [], ""
    for n in range(1, MAX_PARTS + 1):
        prompt, _, _ = part_prompt(encoded, concept.parts.prototypes[n], PersamSettings())
        try:
            oracle, note = follow_candidate(test, features, n, prompt.points_xy.long().numpy())
        except ReferenceCrash as exc:  # not a skip: reported with the other pairs' results
            return [f"the reference crashed at parts {n}: {exc}"], report
        oracles.append(oracle)
        notes += note
    try:
        best = choose(oracles)
    except ReferenceCrash:  # no mask covers a cell: persam keeps the smallest count and says so
        best = oracles[0]
        if not any("no candidate's mask covers a feature cell" in n for n in result.notes):
            failures.append(f"no candidate can win but the result does not say so: {result.notes}")
    ours_scores = {s.parts: s.transport for s in result.part_scores}
    for o in oracles:
        ours = ours_scores[o.parts]
        if (ours is None) != (o.score is None) or (
            o.score is not None and abs(ours - o.score) > SCORE_RTOL * abs(o.score)
        ):
            failures.append(f"parts {o.parts}: transport {ours} vs oracle {o.score}")
    value = iou(result.mask, best.mask)
    report.append(
        f"chosen parts {result.part_count} (oracle {best.parts}), IoU {value:.4f}; scores "
        + ", ".join(f"{o.parts}: {o.score:.2f}" if o.score is not None else f"{o.parts}: -" for o in oracles)
        + notes
    )
    if result.part_count != best.parts:
        failures.append(f"chose {result.part_count} parts, oracle {best.parts}")
    if value < MIN_IOU:
        failures.append(f"final mask IoU {value:.4f}")
    return failures, report


@pytest.mark.parametrize("name", ["red-blob", "green-blob", "blue-blob"])
def test_tiny_part_aware_matches_oracle(name):
    s = build_scene(name)
    assert parts_reference_runs_on(OracleImage(s["sam"], s["ref"], s["mask_rgb"]), s["mask_rgb"]), name
    failures, report = compare(s["model"], s["sam"], s["ref"], s["annotation"], s["mask_rgb"], s["target"])
    print(name, *report)
    assert not failures, "; ".join(failures) + " | " + " ".join(report)


@pytest.mark.slow
def test_real_photos_part_aware_match_oracle():
    """Random-weight MobileSAM on the PerSeg sample: reference 00, targets 01 and 02 of each object."""
    require_path(DATA, "PerSeg sample photos")
    torch.manual_seed(0)
    model = persam.load("vit_t", random_weights=True, device="cpu")
    from mobile_sam.modeling import Sam

    sam = oracle_sam(model, Sam)
    rgb = lambda path: np.array(Image.open(path).convert("RGB"))  # noqa: E731
    failures, report, compared = [], [], []
    objects = sorted(p.name for p in (DATA / "Images").iterdir())
    references = {}
    for obj in objects:  # up front, before any comparison: the inputs the reference runs on
        ann = DATA / "Annotations" / obj / "00.png"
        ref, mask_rgb = rgb(DATA / "Images" / obj / "00.jpg"), rgb(ann)
        oracle_ref = OracleImage(sam, ref, mask_rgb)
        if parts_reference_runs_on(oracle_ref, mask_rgb):
            references[obj] = (ann, ref, mask_rgb, oracle_ref)
    left_out = sorted(set(objects) - set(references))
    for obj, (ann, ref, mask_rgb, oracle_ref) in references.items():
        for idx in ("01", "02"):
            target = rgb(DATA / "Images" / obj / f"{idx}.jpg")
            f, r = compare(model, sam, ref, Image.open(ann), mask_rgb, target, oracle_ref=oracle_ref)
            failures += [f"{obj} {idx}: {x}" for x in f]
            report += [f"{obj} {idx}: {x}" for x in r]
            compared.append(f"{obj} {idx}")
    report.append(f"compared: {', '.join(compared)}; left out (fewer than {MAX_PARTS} reference cells): {left_out}")
    print("\n" + "\n".join(report))
    assert not failures, "; ".join(failures) + "\n" + "\n".join(report)
    assert not left_out and len(compared) == 2 * len(objects) == 6, report[-1]  # every sample object, both targets
