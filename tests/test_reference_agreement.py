"""persam against an independent re-derivation of the authors' reference code.

``reference_oracle`` restates what ``persam.py`` / ``persam_f.py`` of
ZrrSkywalker/Personalize-SAM compute (full-resolution maps, ``topk`` points,
the patched official decoder, PerSAM-F's autograd loop). These tests run both
on the same frozen modules and compare:

* PerSAM: the prompt points, the guided first step (where the guidance acts;
  the refinement mostly washes it out of the final mask) and the final mask;
* PerSAM-F: the fitted weights, the weighted three-scale mask (where the
  weights act) and the final mask.

Prompt points are picked from a full-resolution bilinear map that has flat
plateaus (e.g. along the border), where float32 rounding in the reference
decides between pixels of equal value. When our point differs from the
reference's, the test first checks that it is an extreme of the reference's
map too (up to ``SIM_TOL``) and then follows the reference's computation from
our point, so that the masks compare the same prompt.

Fast tests use the tiny random SAM on synthetic photos; the slow test a
random-weight MobileSAM on real PerSeg photos.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import persam
from extras import require_path
from persam.jobs.synthetic import ellipse_r2
from persam.method.settings import PersamSettings
from reference_oracle import (
    OracleImage,
    OracleResult,
    ReferenceCrash,
    persam_f_fit,
    persam_f_segment,
    persam_segment,
    persam_target,
    reference_cells,
)

MIN_IOU = 0.99
WEIGHT_TOL = 0.01
SIM_TOL = 1e-5  # a point must be an extreme of the reference's similarity map up to float rounding
LOGIT_TOL = 1e-5  # relative to max(1, max |logit|); float32 rounding differences are ~1e-7
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "perseg-sample"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def palette_mask(mask: np.ndarray) -> Image.Image:
    """A PerSeg-style annotation: palette PNG, index 1 rendered as (128, 0, 0)."""
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0])
    return img


def synthetic_photo(
    seed: int, centre: tuple[int, int], radii: tuple[int, int], colour: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 400 noisy photo with one coloured elliptic blob; returns (image, blob mask)."""
    h, w = 300, 400
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.float32) * 0.3 + 90
    blob = ellipse_r2((h, w), (centre[1], centre[0]), (radii[1], radii[0])) <= 1
    img[blob] = np.asarray(colour, np.float32) * 0.8 + rng.integers(0, 50, (int(blob.sum()), 3))
    return img.clip(0, 255).astype(np.uint8), blob


def oracle_sam(model, sam_class):
    """An official ``Sam`` (default pixel mean / std) around the very modules persam's backend uses."""
    b = model.backend
    return sam_class(image_encoder=b.image_encoder, prompt_encoder=b.prompt_encoder, mask_decoder=b.mask_decoder)


def run_oracle(fn, *args, **kwargs):
    """The reference's result. Inputs are chosen up front so that it runs (see ``reference_runs_on``): a crash
    is a failure of the test, never a skip that would hide the comparisons already made."""
    try:
        return fn(*args, **kwargs)
    except ReferenceCrash as exc:
        pytest.fail(f"the reference crashed on an input chosen for it ({exc}); choose another input", pytrace=False)


def reference_runs_on(ref: OracleImage, need: int = 1) -> bool:
    """The property checked up front: the reference mask covers at least ``need`` grid cells by the reference's
    own cell rule (with none, the reference's target is NaN; the part-aware prior needs one cell per part)."""
    return int(reference_cells(ref).sum()) >= need


def check_points(ours: np.ndarray, oracle: OracleResult) -> None:
    """Our points are the max (and min) of the reference's full-resolution map, ties allowed."""
    sim = oracle.similarity
    assert ours.shape == oracle.points_xy.shape, (ours, oracle.points_xy)
    x, y = (int(v) for v in ours[0])
    assert float(sim[y, x]) >= float(sim.max()) - SIM_TOL, (
        f"positive point {ours[0]} vs reference {oracle.points_xy[0]}"
    )
    if len(ours) > 1:
        x, y = (int(v) for v in ours[1])
        assert float(sim[y, x]) <= float(sim.min()) + SIM_TOL, (
            f"negative point {ours[1]} vs reference {oracle.points_xy[1]}"
        )


def follow(segment, test: OracleImage, target, ours_points: np.ndarray) -> tuple[OracleResult, str]:
    """The reference's result for this photo, from our points if they differ only by a tie."""
    oracle = run_oracle(segment, test, target)
    check_points(ours_points, oracle)
    if np.array_equal(ours_points, oracle.points_xy):
        return oracle, ""
    note = f" (tie: reference points {oracle.points_xy.tolist()}, ours {ours_points.tolist()})"
    return run_oracle(segment, test, target, points_xy=ours_points), note


def weighted_mask(concept, image) -> np.ndarray:
    """persam's PerSAM-F weighted three-scale mask before refinement (refinement switched off)."""
    return dataclasses.replace(concept, settings=PersamSettings(refinement=False)).segment(image).mask


def logit_gap(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max |difference|, allowed) for two low-res logit maps."""
    diff = float(np.abs(ours - reference).max())
    return diff, LOGIT_TOL * max(1.0, float(np.abs(reference).max()))


# ---------------------------------------------------------------------------
# Fast: tiny random SAM, synthetic photos
# ---------------------------------------------------------------------------

SCENES = {
    # name: (model seed, reference photo (seed, centre, radii, colour), target photo (...))
    "red-blob": (0, (0, (150, 200), (70, 90), (200, 60, 40)), (100, (170, 230), (60, 80), (190, 70, 50))),
    "green-blob": (1, (1, (140, 180), (80, 100), (40, 180, 60)), (101, (120, 250), (70, 90), (50, 170, 70))),
    "blue-blob": (2, (2, (160, 220), (75, 85), (60, 80, 200)), (102, (150, 150), (65, 95), (70, 90, 190))),
}


def build_scene(name: str) -> dict:
    from segment_anything.modeling import Sam

    model_seed, ref_args, tgt_args = SCENES[name]
    torch.manual_seed(model_seed)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    ref, blob = synthetic_photo(*ref_args)
    target, _ = synthetic_photo(*tgt_args)
    annotation = palette_mask(blob)
    return {
        "name": name,
        "model": model,
        "sam": oracle_sam(model, Sam),
        "ref": ref,
        "annotation": annotation,
        "mask_rgb": np.array(annotation.convert("RGB")),
        "target": target,
    }


@pytest.fixture(scope="module", params=sorted(SCENES))
def tiny_persam(request):
    """PerSAM on one scene: (scene name, reference result, our full result, our first step, tie note)."""
    s = build_scene(request.param)
    test = OracleImage(s["sam"], s["target"])
    ref = OracleImage(s["sam"], s["ref"], s["mask_rgb"])
    assert reference_runs_on(ref), f"{s['name']}: the reference mask covers no grid cell"
    target = persam_target(ref)
    full = s["model"].personalize(s["ref"], s["annotation"]).segment(s["target"])
    no_refinement = PersamSettings(refinement=False)
    first = s["model"].personalize(s["ref"], s["annotation"], settings=no_refinement).segment(s["target"])
    np.testing.assert_array_equal(full.point_labels, [1, 0])
    oracle, note = follow(persam_segment, test, target, full.points_xy)
    return s["name"] + note, oracle, full, first


def test_persam_first_step_mask_matches_reference(tiny_persam):
    name, oracle, _, first = tiny_persam
    value = iou(first.mask, oracle.first_mask)
    print(f"{name}: PerSAM first-step IoU {value:.4f}")
    assert value >= MIN_IOU, f"{name}: guided first step differs from the reference: IoU {value:.4f}"


def test_persam_first_step_logits_match_reference(tiny_persam):
    """The guided decoder pass itself (same prompt): logits equal up to float rounding."""
    name, oracle, _, first = tiny_persam
    diff, allowed = logit_gap(first.low_res_logits, oracle.first_low_res)
    print(f"{name}: PerSAM first-step max |logit diff| {diff:.2e}")
    assert diff <= allowed, (
        f"{name}: guided decoder differs from the reference: max |logit diff| {diff:.2e} > {allowed:.0e}"
    )


def test_persam_final_mask_matches_reference(tiny_persam):
    name, oracle, full, _ = tiny_persam
    value = iou(full.mask, oracle.mask)
    print(f"{name}: PerSAM final IoU {value:.4f}")
    assert value >= MIN_IOU, f"{name}: final mask differs from the reference: IoU {value:.4f}"


def test_oracle_rerunning_the_frozen_decoder_changes_nothing():
    """Justifies ``rerun_decoder=False`` in the fast PerSAM-F test: bit-identical weights."""
    s = build_scene("green-blob")
    ref = OracleImage(s["sam"], s["ref"], s["mask_rgb"])
    literal = run_oracle(persam_f_fit, ref, s["mask_rgb"], steps=20, rerun_decoder=True)
    cached = run_oracle(persam_f_fit, ref, s["mask_rgb"], steps=20, rerun_decoder=False)
    assert torch.equal(literal.weights, cached.weights)


@pytest.fixture(scope="module")
def tiny_persam_f():
    """PerSAM-F on the red-blob scene: the reference's 1000-step fit vs persam."""
    s = build_scene("red-blob")
    fitted = run_oracle(
        persam_f_fit, OracleImage(s["sam"], s["ref"], s["mask_rgb"]), s["mask_rgb"], rerun_decoder=False
    )
    concept = s["model"].personalize(s["ref"], s["annotation"], finetune=True)
    result = concept.segment(s["target"])
    oracle, note = follow(persam_f_segment, OracleImage(s["sam"], s["target"]), fitted, result.points_xy)
    return fitted, oracle, concept, result, s["target"], note


def test_persam_f_weights_match_reference(tiny_persam_f):
    fitted, _, concept, _, _, _ = tiny_persam_f
    ref_w, ours = fitted.weights[:, 0].numpy(), concept.weights.numpy()
    print(f"PerSAM-F weights: reference {ref_w}, persam {ours}")
    assert np.all(np.abs(ours - ref_w) <= WEIGHT_TOL), (ours, ref_w)


def test_persam_f_weighted_mask_matches_reference(tiny_persam_f):
    """The weighted three-scale mask, before refinement (where the weights act)."""
    _, oracle, concept, _, target, note = tiny_persam_f
    value = iou(weighted_mask(concept, target), oracle.first_mask)
    print(f"PerSAM-F weighted-mask IoU {value:.4f}{note}")
    assert value >= MIN_IOU, value


def test_persam_f_final_mask_matches_reference(tiny_persam_f):
    _, oracle, _, result, _, note = tiny_persam_f
    value = iou(result.mask, oracle.mask)
    print(f"PerSAM-F final IoU {value:.4f}{note}")
    assert value >= MIN_IOU, value


# ---------------------------------------------------------------------------
# Slow: random-weight MobileSAM, real PerSeg photos
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_real_photos_match_reference():
    """cat: reference 00, targets 01 and 02; PerSAM, and PerSAM-F from one literal 1000-step fit."""
    require_path(DATA, "PerSeg sample photos")
    torch.manual_seed(0)
    model = persam.load("vit_t", random_weights=True, device="cpu")
    from mobile_sam.modeling import Sam  # already imported (quietly) by persam's builder

    sam = oracle_sam(model, Sam)
    rgb = lambda path: np.array(Image.open(path).convert("RGB"))  # noqa: E731
    ref_path, ann_path = DATA / "Images" / "cat" / "00.jpg", DATA / "Annotations" / "cat" / "00.png"
    ref, mask_rgb = rgb(ref_path), rgb(ann_path)
    targets = {idx: rgb(DATA / "Images" / "cat" / f"{idx}.jpg") for idx in ("01", "02")}
    oracle_ref = OracleImage(sam, ref, mask_rgb)
    assert reference_runs_on(oracle_ref), "cat 00's mask covers no grid cell: the reference cannot run on it"
    oracle_targets = {idx: OracleImage(sam, img) for idx, img in targets.items()}
    failures: list[str] = []
    report: list[str] = []
    compared: list[str] = []

    # PerSAM
    target = persam_target(oracle_ref)
    concept = model.personalize(ref_path, ann_path)
    first_concept = model.personalize(ref_path, ann_path, settings=PersamSettings(refinement=False))
    for idx, img in targets.items():
        full, first = concept.segment(img), first_concept.segment(img)
        oracle, note = follow(persam_segment, oracle_targets[idx], target, full.points_xy)
        v_first, v_final = iou(first.mask, oracle.first_mask), iou(full.mask, oracle.mask)
        diff, allowed = logit_gap(first.low_res_logits, oracle.first_low_res)
        report.append(
            f"PerSAM {idx}: first-step IoU {v_first:.4f} (max |logit diff| {diff:.2e}), final IoU {v_final:.4f}{note}"
        )
        if v_first < MIN_IOU:
            failures.append(f"PerSAM {idx} first-step IoU {v_first:.4f}")
        if diff > allowed:
            failures.append(f"PerSAM {idx} first-step logits differ by {diff:.2e}")
        if v_final < MIN_IOU:
            failures.append(f"PerSAM {idx} final IoU {v_final:.4f}")
        compared.append(f"PerSAM {idx}")

    # PerSAM-F: one reference fit, re-running the decoder at every step like the reference
    fitted = run_oracle(persam_f_fit, oracle_ref, mask_rgb, rerun_decoder=True)
    concept_f = model.personalize(ref_path, ann_path, finetune=True)
    ref_w, ours_w = fitted.weights[:, 0].numpy(), concept_f.weights.numpy()
    report.append(f"PerSAM-F weights: reference {np.round(ref_w, 5)}, persam {np.round(ours_w, 5)}")
    if not np.all(np.abs(ours_w - ref_w) <= WEIGHT_TOL):
        failures.append(f"PerSAM-F weights {ours_w} vs reference {ref_w}")
    for idx, img in targets.items():
        result = concept_f.segment(img)
        oracle, note = follow(persam_f_segment, oracle_targets[idx], fitted, result.points_xy)
        v_weighted, v_final = iou(weighted_mask(concept_f, img), oracle.first_mask), iou(result.mask, oracle.mask)
        report.append(f"PerSAM-F {idx}: weighted-mask IoU {v_weighted:.4f}, final IoU {v_final:.4f}{note}")
        if v_weighted < MIN_IOU:
            failures.append(f"PerSAM-F {idx} weighted-mask IoU {v_weighted:.4f}")
        if v_final < MIN_IOU:
            failures.append(f"PerSAM-F {idx} final IoU {v_final:.4f}")
        compared.append(f"PerSAM-F {idx}")

    report.append(f"compared: {', '.join(compared)}")
    print("\n" + "\n".join(report))
    assert not failures, "; ".join(failures) + "\n" + "\n".join(report)
    assert compared == [f"{m} {i}" for m in ("PerSAM", "PerSAM-F") for i in ("01", "02")], compared
