"""The app's location prior (similarity / part-aware) and part-count range reach the masks it writes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from extras import require

require("sklearn")
require("ot")

from conftest import synthetic_photo  # noqa: E402
from persam.app import batch, workspace  # noqa: E402


@pytest.fixture
def ws(tiny_model, tmp_path) -> workspace.Workspace:
    """A workspace with one reference photo and its true mask."""
    photo, mask = synthetic_photo(seed=5)
    Image.fromarray(photo).save(tmp_path / "dog.png")
    ws = workspace.Workspace()
    workspace.set_photo(ws, tiny_model, tmp_path / "dog.png")
    ws.mask = mask
    workspace.keep_reference(ws)
    return ws


def test_part_aware_choice_reaches_the_segmented_photos(tiny_model, ws, tmp_path):
    message = workspace.learn(
        ws, tiny_model, finetune=False, without=[], presence_threshold=None, prior="part-aware", parts=(1, 3)
    )
    assert "part-aware prior, parts 1..3" in message
    assert ws.concept.prior == "part-aware" and ws.concept.parts.parts == (1, 3)
    Image.fromarray(synthetic_photo(seed=21)[0]).save(tmp_path / "one.png")
    direct = ws.concept.segment(np.asarray(Image.open(tmp_path / "one.png").convert("RGB")))
    assert direct.part_count in (1, 2, 3) and [s.parts for s in direct.part_scores] == [1, 2, 3]

    result = batch.segment_uploads(ws.concept, [tmp_path / "one.png"], batch.BatchOptions(), tmp_path / "work")
    with zipfile.ZipFile(result.zip_path) as z:
        (entry,) = json.loads(z.read("manifest.json"))["inputs"]
        with z.open("one.png") as f:
            got = np.asarray(Image.open(f)) > 0
    assert entry["parts"][0]["chosen"] == direct.part_count
    assert [c["parts"] for c in entry["parts"][0]["candidates"]] == [1, 2, 3]
    np.testing.assert_array_equal(got, direct.mask)
    assert result.gallery[0][1].endswith(f"{direct.part_count} part" + ("s" if direct.part_count > 1 else ""))

    # the similarity prior (the default) records no part count
    assert "part-aware" not in workspace.learn(ws, tiny_model, finetune=False, without=[], presence_threshold=None)
    assert ws.concept.prior == "similarity"
    assert ws.concept.segment(np.asarray(Image.open(tmp_path / "one.png").convert("RGB"))).part_count is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prior": "part-aware", "finetune": True}, "part-aware prior is training-free"),
        ({"prior": "similarity", "parts": (1, 3)}, "part-aware prior only"),
        ({"prior": "part-aware", "parts": (3, 2)}, "1 <= MIN <= MAX, got 3..2"),
        ({"prior": "parts"}, "unknown prior"),
    ],
)
def test_prior_choices_are_checked(tiny_model, ws, kwargs, message):
    options = {"finetune": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        workspace.learn(ws, tiny_model, without=[], presence_threshold=None, **options)


def test_instances_need_the_similarity_prior(tiny_model, ws, tmp_path):
    workspace.learn(
        ws, tiny_model, finetune=False, without=[], presence_threshold=None, prior="part-aware", parts=(1, 2)
    )
    with pytest.raises(ValueError, match="similarity prior only"):
        batch.segment_uploads(
            ws.concept, [tmp_path / "dog.png"], batch.BatchOptions(max_instances=2), tmp_path / "work"
        )


def test_page_passes_the_prior_and_range_to_learning(tiny_model, ws, tmp_path):
    require("gradio")
    from persam.app.ui import PRIORS, build

    demo = build(tiny_model, tmp_path)
    (learn,) = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_learn"]
    labels = [getattr(block, "label", None) for block in learn.inputs]
    assert {"Location prior", "Fewest parts"} <= set(labels) and any(str(x).startswith("Most parts") for x in labels)
    part_aware = next(k for k, v in PRIORS.items() if v == "part-aware")
    _, message = learn.fn(ws, "PerSAM (training-free)", [], None, part_aware, 2, 3)
    assert "parts 2..3" in message and ws.concept.parts.parts == (2, 3)
    similarity = next(k for k, v in PRIORS.items() if v == "similarity")
    _, message = learn.fn(ws, "PerSAM (training-free)", [], None, similarity, 2, 3)  # the hidden range is not sent
    assert ws.concept.parts is None and "part-aware" not in message
    (toggle,) = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_prior"]
    assert toggle.fn(part_aware)["visible"] is True and toggle.fn(similarity)["visible"] is False


@pytest.fixture
def matcher_model(tiny_dino):
    """The tiny SAM with the tiny DINOv2 (the matcher prior's), seeded."""
    import torch

    import persam

    require("scipy")
    torch.manual_seed(0)
    return persam.load("sam_tiny", random_weights=True, device="cpu")


def test_matcher_choice_reaches_the_segmented_photos(matcher_model, ws, tmp_path):
    message = workspace.learn(ws, matcher_model, finetune=False, without=[], presence_threshold=None, prior="matcher")
    assert ws.concept.prior == "matcher" and "matcher prior (dinov2_vitl14)" in message
    Image.fromarray(synthetic_photo(seed=21)[0]).save(tmp_path / "one.png")
    direct = ws.concept.segment(np.asarray(Image.open(tmp_path / "one.png").convert("RGB")))
    assert direct.mask.any() and len(direct.prompts) >= 1

    result = batch.segment_uploads(ws.concept, [tmp_path / "one.png"], batch.BatchOptions(), tmp_path / "work")
    with zipfile.ZipFile(result.zip_path) as z:
        with z.open("one.png") as f:
            got = np.asarray(Image.open(f)) > 0
    np.testing.assert_array_equal(got, direct.mask)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"finetune": True}, "matcher prior is training-free"),
        ({"without": ["refinement"]}, "no PerSAM components to switch off"),
    ],
)
def test_matcher_choice_refusals(matcher_model, ws, kwargs, message):
    options = {"finetune": False, "without": [], **kwargs}
    with pytest.raises(ValueError, match=message):
        workspace.learn(ws, matcher_model, presence_threshold=None, prior="matcher", **options)


def test_matcher_refuses_absence_detection_in_the_batch(matcher_model, ws, tmp_path):
    workspace.learn(ws, matcher_model, finetune=False, without=[], presence_threshold=None, prior="matcher")
    with pytest.raises(ValueError, match="matcher prior always returns its merged mask"):
        batch.segment_uploads(
            ws.concept, [tmp_path / "dog.png"], batch.BatchOptions(detect_absent=True), tmp_path / "w"
        )


def test_page_offers_the_matcher_prior():
    from persam.app.ui import PRIORS

    assert "matcher" in PRIORS.values()
