import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_photo
from persam.method.settings import PersamSettings


def test_personalize_and_segment(tiny_model, photo):
    image, mask = photo
    concept = tiny_model.personalize(image, mask)
    other, _ = synthetic_photo(200, 260, seed=1, center=(0.4, 0.6))
    result = concept.segment(other)
    assert result.mask.shape == (200, 260) and result.mask.dtype == bool
    assert result.low_res_logits.shape == (64, 64)
    assert result.points_xy.shape == (2, 2) and result.point_labels.tolist() == [1, 0]
    assert 0 <= result.points_xy[:, 0].max() < 260 and 0 <= result.points_xy[:, 1].max() < 200
    assert np.isfinite(result.score)


def test_encoder_runs_once_per_photo(tiny_model):
    image, mask = synthetic_photo(seed=11)  # photos no other test encodes
    backend = tiny_model.backend
    before = backend.encoder_calls
    concept = tiny_model.personalize(image, mask, finetune=True)
    concept.segment(image)  # the reference itself: cached embedding
    other, _ = synthetic_photo(seed=12)
    concept.segment(other)
    concept.segment(other)
    assert backend.encoder_calls - before == 2


def test_persam_f_concept(tiny_model, photo):
    image, mask = photo
    concept = tiny_model.personalize(image, mask, finetune=True)
    assert concept.method == "persam-f"
    assert concept.weights.shape == (3,) and float(concept.weights.sum()) == pytest.approx(1.0)
    result = concept.segment(synthetic_photo(seed=3)[0])
    assert result.points_xy.shape == (1, 2) and result.point_labels.tolist() == [1]


def test_one_reference_in_a_list_is_the_single_reference(tiny_model, photo):
    image, mask = photo
    a = tiny_model.personalize(image, mask)
    b = tiny_model.personalize([image], [mask])
    assert np.array_equal(a.target.mean.numpy(), b.target.mean.numpy())


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda m: np.zeros_like(m), "empty"),
        (lambda m: np.ones_like(m), "whole photo"),
        (lambda m: m[:-3], "mask is 240x177 but the photo is 240x180"),
    ],
)
def test_bad_reference_masks(tiny_model, photo, bad, message):
    image, mask = photo
    with pytest.raises(ValueError, match=message):
        tiny_model.personalize(image, bad(mask))


def test_image_inputs_are_converted(tiny_model, tmp_path, photo):
    image, mask = photo
    gray = Image.fromarray(image).convert("L")
    rgba = Image.fromarray(image).convert("RGBA")
    pal = Image.fromarray(image).convert("P")
    sixteen = image[..., 0].astype(np.uint16) * 257
    grey3 = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    red3 = np.repeat(image[..., :1], 3, axis=2)  # the 16-bit channel, scaled back to 8 bits, as grey
    expected = {"L": grey3, "RGBA": image, "P": np.asarray(pal.convert("RGB")), "uint16": red3}
    for name, src in zip(expected, (gray, rgba, pal, sixteen)):
        got = tiny_model.personalize(src, mask).target
        want = tiny_model.personalize(expected[name], mask).target
        assert got.count == want.count > 0, name
        torch.testing.assert_close(got.mean, want.mean, atol=1e-6, rtol=0, msg=name)
        torch.testing.assert_close(got.max, want.max, atol=1e-6, rtol=0, msg=name)
    # and the conversion matters: the grey concept is not the colour one
    assert (
        tiny_model.personalize(gray, mask).target.mean - tiny_model.personalize(image, mask).target.mean
    ).abs().max() > 1e-3
    # EXIF orientation: a photo stored rotated with tag 6 (rotate 90 CW to display).
    stored = Image.fromarray(np.rot90(image, k=1).copy())
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif)
    from persam.io import load_image

    assert load_image(path).shape == image.shape


def test_label_selects_one_object(tiny_model, photo):
    image, mask = photo
    labels = np.zeros(mask.shape, np.uint8)
    labels[mask] = 2
    labels[:20, :20] = 1
    concept = tiny_model.personalize(image, labels, label=2)
    plain = tiny_model.personalize(image, mask)
    assert np.allclose(concept.target.mean.numpy(), plain.target.mean.numpy())


def test_components_act_on_the_first_pass(tiny_model, photo):
    """Each component changes the step it acts on (the refinement can wash it out)."""
    image, mask = photo
    other = synthetic_photo(seed=7)[0]
    base = PersamSettings(refinement=False)
    full = tiny_model.personalize(image, mask, settings=base).segment(other).low_res_logits
    for component in ("guided-attention", "semantic-prompt", "negative-point"):
        off = tiny_model.personalize(image, mask, settings=base.without(component)).segment(other).low_res_logits
        assert np.abs(off - full).max() > 1e-4, component
    with pytest.raises(ValueError, match="unknown component"):
        base.without("nonsense")


def test_a_result_holds_its_prompts_once(tiny_model, photo):
    """points_xy / point_labels / box_xyxy are views of ``prompts``, not a second record."""
    from persam.session.results import SegmentationResult

    image, mask = photo
    result = tiny_model.personalize(image, mask).segment(synthetic_photo(seed=1, center=(0.4, 0.6))[0])
    assert len(result.prompts) == 3  # the guided pass and two refinements
    first, last = result.prompts[0], result.prompts[-1]
    np.testing.assert_array_equal(result.points_xy, np.asarray(first.points_xy))
    assert result.point_labels.tolist() == list(first.point_labels) == [1, 0]
    assert last.box_xyxy is not None and result.box_xyxy.tolist() == list(last.box_xyxy)
    with pytest.raises(TypeError):
        SegmentationResult(
            mask=result.mask, score=0.5, low_res_logits=result.low_res_logits, points_xy=result.points_xy
        )
    absent = SegmentationResult(mask=result.mask, score=0.1, low_res_logits=result.low_res_logits, present=False)
    assert absent.points_xy.shape == (0, 2) and absent.point_labels.shape == (0,) and absent.box_xyxy is None
