"""SAM's prompt-to-mask on a cached embedding, against the official predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import persam
from conftest import synthetic_photo

MIN_IOU = 0.99


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def model_and_predictor():
    """A fresh tiny model (own encoder counter) and the official predictor around its very modules."""
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

    torch.manual_seed(0)  # masks of a few thousand pixels on these photos: neither empty nor full
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    b = model.backend
    sam = Sam(image_encoder=b.image_encoder, prompt_encoder=b.prompt_encoder, mask_decoder=b.mask_decoder).eval()
    return model, SamPredictor(sam)


PROMPTS = {
    "box": dict(box_xyxy=[60, 40, 170, 150]),
    "one point": dict(points_xy=[[108, 81]]),
    "points": dict(points_xy=[[108, 81], [20, 20]], point_labels=[1, 0]),
    "box and points": dict(points_xy=[[108, 81], [65, 45]], point_labels=[1, 0], box_xyxy=[60, 40, 170, 150]),
}


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_mask_from_prompts_matches_official_predictor(model_and_predictor, name):
    model, predictor = model_and_predictor
    image, _ = synthetic_photo(seed=4)
    kwargs = PROMPTS[name]
    ours = model.mask_from_prompts(image, **kwargs)
    predictor.set_image(image)
    points = kwargs.get("points_xy")
    labels = kwargs.get("point_labels", None if points is None else [1] * len(points))
    box = kwargs.get("box_xyxy")
    multimask = box is None
    masks, scores, _ = predictor.predict(
        point_coords=None if points is None else np.asarray(points, float),
        point_labels=None if labels is None else np.asarray(labels),
        box=None if box is None else np.asarray(box, float),
        multimask_output=multimask,
    )
    k = int(np.argmax(scores)) if multimask else 0
    value = iou(ours.mask, masks[k])
    print(f"{name}: IoU {value:.4f} (area {int(ours.mask.sum())} vs {int(masks[k].sum())})")
    assert ours.mask.shape == image.shape[:2]
    assert masks[k].any() and value >= MIN_IOU, (name, value)
    assert abs(ours.score - float(scores[k])) <= 1e-4 * max(1.0, abs(float(scores[k])))
    assert ours.box_xyxy is None if box is None else ours.box_xyxy.tolist() == box
    assert ours.points_xy.shape == (0 if points is None else len(points), 2)


def test_clicks_reuse_one_encoding(model_and_predictor):
    """Several clicks on one photo: one encoder run, then decoder passes only."""
    model, _ = model_and_predictor
    image, _ = synthetic_photo(seed=11)
    before = model.backend.encoder_calls
    clicks = [[100, 80], [120, 90], [30, 30]]
    results = [
        model.mask_from_prompts(image, points_xy=clicks[: i + 1], point_labels=[1, 1, 0][: i + 1]) for i in range(3)
    ]
    results.append(model.mask_from_prompts(image, box_xyxy=[50, 30, 160, 140]))
    assert model.backend.encoder_calls - before == 1
    assert len({r.mask.tobytes() for r in results}) > 1  # the prompts did change the masks


def test_personalize_from_a_box_equals_personalize_from_its_mask(model_and_predictor):
    model, _ = model_and_predictor
    ref, _ = synthetic_photo(seed=5)
    target, _ = synthetic_photo(seed=6, center=(0.55, 0.6))
    before = model.backend.encoder_calls
    box = [60, 40, 170, 150]
    from_box = model.personalize(ref, box=box)
    assert model.backend.encoder_calls - before == 1  # the mask came from the same encoding
    mask = model.mask_from_prompts(ref, box_xyxy=box).mask
    from_mask = model.personalize(ref, mask)
    assert torch.equal(from_box.target.direction("mean"), from_mask.target.direction("mean"))
    np.testing.assert_array_equal(from_box.segment(target).mask, from_mask.segment(target).mask)
    from_points = model.personalize(ref, points=[[108, 81]])
    from_click_mask = model.personalize(ref, model.mask_from_prompts(ref, points_xy=[[108, 81]]).mask)
    assert torch.equal(from_points.target.direction("mean"), from_click_mask.target.direction("mean"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "no prompt"),
        (dict(points_xy=[[240, 10]]), "outside the 240x180 photo"),
        (dict(points_xy=[[-1, 10]]), "outside"),
        (dict(points_xy=[[10, 10]], point_labels=[0]), "only negative"),
        (dict(points_xy=[[10, 10]], point_labels=[1, 0]), "one label"),
        (dict(points_xy=[[10, 10]], point_labels=[2]), "1 (object) or 0"),
        (dict(points_xy=[10, 10, 3]), "(x, y) pairs"),
        (dict(box_xyxy=[10, 10, 5, 50]), "is empty"),
        (dict(box_xyxy=[0, 0, 241, 50]), "outside"),
        (dict(box_xyxy=[0, 0, 50]), "four numbers"),
    ],
)
def test_bad_prompts_say_what_to_fix(tiny_model, kwargs, message):
    image, _ = synthetic_photo()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_model.mask_from_prompts(image, **kwargs)


def test_personalize_wants_a_mask_or_prompts(tiny_model):
    image, mask = synthetic_photo()
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model.personalize(image, mask, box=[1, 1, 50, 50])
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model.personalize(image)
    with pytest.raises(ValueError, match="one reference photo"):
        tiny_model.personalize([image, image], box=[1, 1, 50, 50])
