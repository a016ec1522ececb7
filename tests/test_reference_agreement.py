"""persam against an independent re-derivation of the authors' reference code.

``reference_oracle`` restates what ``persam.py`` / ``persam_f.py`` of
ZrrSkywalker/Personalize-SAM compute (full-resolution maps, ``topk`` points,
the patched official decoder, PerSAM-F's autograd loop re-running the decoder
every step). These tests run both on the same frozen modules and compare:

* PerSAM: the prompt points, the guided first-step mask (where the guidance
  acts; the refinement washes it out of the final mask) and the final mask;
* PerSAM-F: the fitted weights, the weighted three-scale mask and the final mask.

Fast tests use the tiny random SAM on synthetic photos; the slow test a
random-weight MobileSAM on real PerSeg photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import persam
from persam.method.settings import PersamSettings
from reference_oracle import (
    OracleImage,
    OracleResult,
    ReferenceCrash,
    guidance_bias,
    persam_f_fit,
    persam_f_segment,
    persam_segment,
    persam_target,
)

MIN_IOU = 0.99
WEIGHT_TOL = 0.01
SIM_TOL = 1e-5  # our points must be extremes of the reference's similarity map up to float rounding
LOGIT_TOL = 1e-5  # relative; float32 rounding differences are ~1e-7
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "perseg-sample"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def palette_mask(mask: np.ndarray) -> Image.Image:
    """A PerSeg-style annotation: palette PNG, index 1 rendered as (128, 0, 0)."""
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0])
    return img


def synthetic_photo(seed: int, centre: tuple[int, int], radii: tuple[int, int], colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 400 noisy photo with one coloured elliptic blob; returns (image, blob mask)."""
    h, w = 300, 400
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.float32) * 0.3 + 90
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1
    img[blob] = np.asarray(colour, np.float32) * 0.8 + rng.integers(0, 50, (int(blob.sum()), 3))
    return img.clip(0, 255).astype(np.uint8), blob


def oracle_sam(model, sam_class):
    """An official ``Sam`` around the very modules the persam backend uses."""
    b = model.backend
    return sam_class(image_encoder=b.image_encoder, prompt_encoder=b.prompt_encoder, mask_decoder=b.mask_decoder)


def run_oracle(fn, *args):
    try:
        return fn(*args)
    except ReferenceCrash as exc:  # the reference has no answer here
        pytest.skip(f"the reference computation would crash: {exc}")


def check_points(ours: np.ndarray, oracle: OracleResult, with_negative: bool) -> None:
    """Our points must be the top / bottom of the reference's full-resolution map (ties allowed)."""
    sim = oracle.similarity
    x, y = (int(v) for v in ours[0])
    assert float(sim[y, x]) >= float(sim.max()) - SIM_TOL, (ours[0], oracle.points_xy[0])
    if with_negative:
        x, y = (int(v) for v in ours[1])
        assert float(sim[y, x]) <= float(sim.min()) + SIM_TOL, (ours[1], oracle.points_xy[1])


# ---------------------------------------------------------------------------
# Fast: tiny random SAM, synthetic photos
# ---------------------------------------------------------------------------

SCENES = {
    # name: (model seed, reference (seed, centre, radii, colour), target (...))
    "red-blob": (0, (0, (150, 200), (70, 90), (200, 60, 40)), (100, (170, 230), (60, 80), (190, 70, 50))),
    "green-blob": (1, (1, (140, 180), (80, 100), (40, 180, 60)), (101, (120, 250), (70, 90), (50, 170, 70))),
    "blue-blob": (2, (2, (160, 220), (75, 85), (60, 80, 200)), (102, (150, 150), (65, 95), (70, 90, 190))),
}


@pytest.fixture(scope="module", params=sorted(SCENES))
def tiny_scene(request):
    """Model, oracle model, reference photo / mask, target photo of one scene."""
    model_seed, ref_args, tgt_args = SCENES[request.param]
    from segment_anything.modeling import Sam

    torch.manual_seed(model_seed)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    ref, blob = synthetic_photo(*ref_args)
    target, _ = synthetic_photo(*tgt_args)
    annotation = palette_mask(blob)
    return {
        "name": request.param,
        "model": model,
        "sam": oracle_sam(model, Sam),
        "ref": ref,
        "annotation": annotation,
        "mask_rgb": np.array(annotation.convert("RGB")),
        "target": target,
    }


@pytest.fixture(scope="module")
def tiny_persam(tiny_scene):
    s = tiny_scene
    ref = OracleImage(s["sam"], s["ref"], s["mask_rgb"])
    test = OracleImage(s["sam"], s["target"])
    target = persam_target(ref)
    oracle = run_oracle(persam_segment, test, target)
    full = s["model"].personalize(s["ref"], s["annotation"]).segment(s["target"])
    first = s["model"].personalize(s["ref"], s["annotation"], settings=PersamSettings(refinement=False)).segment(s["target"])
    # The reference's guided first step fed with OUR points (they may differ from
    # the oracle's by a float-rounding tie, which check_points allows).
    same_prompt = test.predict(
        full.points_xy,
        full.point_labels,
        multimask=False,
        attn_sim=guidance_bias(oracle.similarity, test.grid_hw),
        target_embedding=target.embedding,
    )
    return oracle, full, first, same_prompt


def test_persam_points_match_reference(tiny_persam):
    oracle, full, _, _ = tiny_persam
    np.testing.assert_array_equal(full.point_labels, oracle.labels)
    check_points(full.points_xy, oracle, with_negative=True)


def test_persam_first_step_matches_reference(tiny_persam, tiny_scene):
    oracle, _, first, _ = tiny_persam
    value = iou(first.mask, oracle.first_mask)
    print(f"{tiny_scene['name']}: PerSAM first-step IoU {value:.4f}")
    assert value >= MIN_IOU, f"guided first step differs from the reference: IoU {value:.4f}"


def test_persam_first_step_logits_match_reference(tiny_persam, tiny_scene):
    """The guided decoder pass itself: low-res logits equal up to float rounding."""
    _, _, first, same_prompt = tiny_persam
    reference = same_prompt.low_res[0]
    diff = float(np.abs(first.low_res_logits - reference).max())
    scale = float(np.abs(reference).max())
    print(f"{tiny_scene['name']}: first-step max |logit diff| {diff:.2e} (max |logit| {scale:.2e})")
    assert diff <= LOGIT_TOL * max(1.0, scale), f"guided decoder differs from the reference: max |diff| {diff:.2e}"


def test_persam_final_mask_matches_reference(tiny_persam, tiny_scene):
    oracle, full, _, _ = tiny_persam
    value = iou(full.mask, oracle.mask)
    print(f"{tiny_scene['name']}: PerSAM final IoU {value:.4f}")
    assert value >= MIN_IOU, f"final mask differs from the reference: IoU {value:.4f}"


@pytest.fixture(scope="module")
def tiny_persam_f():
    """PerSAM-F on the red-blob scene: the reference's 1000-step loop vs persam."""
    from segment_anything.modeling import Sam

    model_seed, ref_args, tgt_args = SCENES["red-blob"]
    torch.manual_seed(model_seed)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    sam = oracle_sam(model, Sam)
    ref, blob = synthetic_photo(*ref_args)
    target, _ = synthetic_photo(*tgt_args)
    annotation = palette_mask(blob)
    mask_rgb = np.array(annotation.convert("RGB"))
    fitted = run_oracle(persam_f_fit, OracleImage(sam, ref, mask_rgb), mask_rgb)
    oracle = run_oracle(persam_f_segment, OracleImage(sam, target), fitted)
    concept = model.personalize(ref, annotation, finetune=True)
    return fitted, oracle, concept, concept.segment(target), target


def test_persam_f_weights_match_reference(tiny_persam_f):
    fitted, _, concept, _, _ = tiny_persam_f
    ref_w = fitted.weights[:, 0].numpy()
    ours = concept.weights.numpy()
    print(f"PerSAM-F weights: reference {ref_w}, persam {ours}")
    assert np.all(np.abs(ours - ref_w) <= WEIGHT_TOL), (ours, ref_w)


def weighted_mask(concept, image) -> np.ndarray:
    """persam's PerSAM-F weighted three-scale mask before refinement (package internals)."""
    from persam.method.persam_f import three_masks
    from persam.method.resample import upscale_logits

    encoded = concept.model.encode(image)
    logits, _, _, _ = three_masks(concept.model.backend, encoded, concept.target)
    weighted = torch.einsum("k,khw->hw", concept.weights.to(logits), logits)
    return (upscale_logits(weighted[None], encoded.geometry)[0] > 0).cpu().numpy()


def test_persam_f_weighted_mask_matches_reference(tiny_persam_f):
    """The weighted three-scale mask, before refinement (where the weights act)."""
    _, oracle, concept, _, target = tiny_persam_f
    value = iou(weighted_mask(concept, target), oracle.first_mask)
    print(f"PerSAM-F weighted-mask IoU {value:.4f}")
    assert value >= MIN_IOU, value


def test_persam_f_final_mask_matches_reference(tiny_persam_f):
    _, oracle, _, result, _ = tiny_persam_f
    check_points(result.points_xy, oracle, with_negative=False)
    value = iou(result.mask, oracle.mask)
    print(f"PerSAM-F final IoU {value:.4f}")
    assert value >= MIN_IOU, value


# ---------------------------------------------------------------------------
# Slow: random-weight MobileSAM, real PerSeg photos
# ---------------------------------------------------------------------------


def _photo(kind: str, obj: str, idx: str) -> Path:
    return DATA / kind / obj / (f"{idx}.jpg" if kind == "Images" else f"{idx}.png")


@pytest.mark.slow
def test_real_photos_match_reference():
    """cat: reference 00, targets 01 and 02; PerSAM and PerSAM-F (one shared 1000-step fit)."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not present")
    torch.manual_seed(0)
    model = persam.load("vit_t", random_weights=True, device="cpu")
    from mobile_sam.modeling import Sam  # already imported (quietly) by persam's builder

    sam = oracle_sam(model, Sam)
    rgb = lambda p: np.array(Image.open(p).convert("RGB"))  # noqa: E731
    ref_path, ann_path = _photo("Images", "cat", "00"), _photo("Annotations", "cat", "00")
    ref, mask_rgb = rgb(ref_path), rgb(ann_path)
    targets = {idx: rgb(_photo("Images", "cat", idx)) for idx in ("01", "02")}

    oracle_ref = OracleImage(sam, ref, mask_rgb)
    oracle_targets = {idx: OracleImage(sam, img) for idx, img in targets.items()}
    failures: list[str] = []
    report: list[str] = []

    # PerSAM
    target = persam_target(oracle_ref)
    concept = model.personalize(ref_path, ann_path)
    first_concept = model.personalize(ref_path, ann_path, settings=PersamSettings(refinement=False))
    for idx, img in targets.items():
        oracle = run_oracle(persam_segment, oracle_targets[idx], target)
        full, first = concept.segment(img), first_concept.segment(img)
        check_points(full.points_xy, oracle, with_negative=True)
        v_first, v_final = iou(first.mask, oracle.first_mask), iou(full.mask, oracle.mask)
        report.append(f"PerSAM {idx}: first-step IoU {v_first:.4f}, final IoU {v_final:.4f}")
        if v_first < MIN_IOU:
            failures.append(f"PerSAM {idx} first step IoU {v_first:.4f}")
        if v_final < MIN_IOU:
            failures.append(f"PerSAM {idx} final IoU {v_final:.4f}")

    # PerSAM-F: one reference fit (decoder re-run every step), both targets
    fitted = run_oracle(persam_f_fit, oracle_ref, mask_rgb)
    concept_f = model.personalize(ref_path, ann_path, finetune=True)
    ref_w, ours_w = fitted.weights[:, 0].numpy(), concept_f.weights.numpy()
    report.append(f"PerSAM-F weights: reference {np.round(ref_w, 5)}, persam {np.round(ours_w, 5)}")
    if not np.all(np.abs(ours_w - ref_w) <= WEIGHT_TOL):
        failures.append(f"PerSAM-F weights {ours_w} vs reference {ref_w}")
    for idx, img in targets.items():
        oracle = run_oracle(persam_f_segment, oracle_targets[idx], fitted)
        result = concept_f.segment(img)
        check_points(result.points_xy, oracle, with_negative=False)
        v_weighted, v_final = iou(weighted_mask(concept_f, img), oracle.first_mask), iou(result.mask, oracle.mask)
        report.append(f"PerSAM-F {idx}: weighted-mask IoU {v_weighted:.4f}, final IoU {v_final:.4f}")
        if v_weighted < MIN_IOU:
            failures.append(f"PerSAM-F {idx} weighted mask IoU {v_weighted:.4f}")
        if v_final < MIN_IOU:
            failures.append(f"PerSAM-F {idx} final IoU {v_final:.4f}")

    print("\n".join(report))
    assert not failures, "; ".join(failures) + "\n" + "\n".join(report)

