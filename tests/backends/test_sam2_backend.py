"""SAM 2.1 backend on the reduced ``sam2_tiny`` architecture: encoding, the decoder runner, the family contract.

The official ``SAM2ImagePredictor`` is the oracle: it hard-codes feature sizes for
1024-px inputs, so it gets ``feature_sizes(256)`` for the reduced architecture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extras import require

require("sam2")

from persam.backends import sam2_models  # noqa: E402
from persam.method.decoder import Guidance, Prompt, decode, runner_for  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def sam2_model():
    import persam

    torch.manual_seed(0)
    return persam.load("sam2_tiny", random_weights=True, device="cpu")


@pytest.fixture(scope="module")
def image():
    from persam.jobs.synthetic import tiled_photo

    return tiled_photo(h=150, w=260)  # not square: the square resize stretches it


@pytest.fixture(scope="module")
def predictor(sam2_model, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(sam2_model.backend.model)
    pred._bb_feat_sizes = sam2_models.feature_sizes(sam2_models.TINY_INPUT_SIZE)
    pred.set_image(image[0])
    return pred


def test_encoding_equals_the_predictors_features(sam2_model, image, predictor):
    enc = sam2_model.backend.encode(image[0])
    torch.testing.assert_close(enc.embedding, predictor._features["image_embed"], atol=0, rtol=0)
    for ours, theirs in zip(enc.high_res_features, predictor._features["high_res_feats"]):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert enc.geometry.resize == "square" and enc.geometry.resized_hw == (256, 256)


@pytest.mark.parametrize("multimask", [False, True])
def test_plain_passes_equal_the_predictor(sam2_model, image, predictor, multimask):
    """Clicks, clicks with a box, a mask prompt: low-res logits and IoU as SAM2ImagePredictor.predict."""
    backend = sam2_model.backend
    enc = backend.encode(image[0])
    pts, labels, box = np.array([[70.0, 60.0], [10.0, 100.0]]), np.array([1, 0]), np.array([20.0, 15.0, 150.0, 120.0])
    cases = [(pts, labels, None), (pts, labels, box), (None, None, box)]
    for p, lab, b in cases:
        _, iou, low = predictor.predict(point_coords=p, point_labels=lab, box=b, multimask_output=multimask)
        out = decode(
            backend,
            enc,
            Prompt(
                points_xy=None if p is None else torch.tensor(p, dtype=torch.float32),
                labels=None if lab is None else torch.tensor(lab),
                box_xyxy=None if b is None else torch.tensor(b, dtype=torch.float32),
            ),
            multimask,
        )
        torch.testing.assert_close(out.low_res_logits, torch.as_tensor(low), **TOL)
        torch.testing.assert_close(out.iou, torch.as_tensor(iou), **TOL)
        assert out.object_score is not None
    # a mask prompt (the refinement's), from the previous pass's low-res logits
    _, iou, low2 = predictor.predict(
        point_coords=pts, point_labels=labels, mask_input=low[None, 0], multimask_output=multimask
    )
    out = decode(
        backend,
        enc,
        Prompt(
            points_xy=torch.tensor(pts, dtype=torch.float32),
            labels=torch.tensor(labels),
            mask_logits=torch.as_tensor(low[0]),
        ),
        multimask,
    )
    torch.testing.assert_close(out.low_res_logits, torch.as_tensor(low2), **TOL)


def test_guided_rerun_is_the_official_computation_and_guidance_changes_it(sam2_model, image):
    """A no-op guidance (zero target) forces the re-run: it equals the official decoder. A bias or target changes it."""
    backend = sam2_model.backend
    enc = backend.encode(image[0])
    prompt = Prompt(points_xy=torch.tensor([[70.0, 60.0]]), labels=torch.tensor([1]))
    c, (h, w) = enc.embedding.shape[1], enc.geometry.grid_hw
    for multimask in (False, True):
        plain = decode(backend, enc, prompt, multimask)
        rerun = decode(backend, enc, prompt, multimask, Guidance(target_embedding=torch.zeros(c)))
        torch.testing.assert_close(rerun.low_res_logits, plain.low_res_logits, **TOL)
        torch.testing.assert_close(rerun.iou, plain.iou, **TOL)
        assert rerun.object_score == pytest.approx(plain.object_score, abs=1e-5)
    plain = decode(backend, enc, prompt, True)
    bias = torch.zeros(h * w)
    bias[: h * w // 2] = 5.0
    biased = decode(backend, enc, prompt, True, Guidance(attention_bias=bias))
    target = decode(backend, enc, prompt, True, Guidance(target_embedding=enc.embedding[0, :, 3, 4]))
    assert (biased.low_res_logits - plain.low_res_logits).abs().max() > 1e-3
    assert (target.low_res_logits - plain.low_res_logits).abs().max() > 1e-3


def test_shared_attention_equals_sam2s_sdpa_attention(sam2_model):
    from persam.method.guided import attention

    module = sam2_model.backend.mask_decoder.transformer.layers[0].cross_attn_token_to_image
    torch.manual_seed(1)
    q, k = torch.randn(2, 7, 256), torch.randn(2, 30, 256)
    with torch.no_grad():
        torch.testing.assert_close(attention(module, q, k, k, None), module(q=q, k=k, v=k), **TOL)


def test_a_sam2_decoder_never_takes_the_sam1_fast_path(sam2_model, tiny_model, image, monkeypatch):
    """SAM 2's decoder passes the SAM 1 structural check, yet its runner does not declare the fast path."""
    from persam.method import factored, sam1_runner

    decoder = sam2_model.backend.mask_decoder
    assert factored.supports(decoder)  # it looks like SAM 1's: the check alone would accept it
    assert runner_for(sam2_model.backend).fast_path is False and runner_for(tiny_model.backend).fast_path is True
    taken = []
    real = factored.predict_masks
    monkeypatch.setattr(factored, "predict_masks", lambda *a, **k: taken.append(1) or real(*a, **k))
    prompt = Prompt(points_xy=torch.tensor([[70.0, 60.0]]), labels=torch.tensor([1]))
    enc = sam2_model.backend.encode(image[0])
    c, (h, w) = enc.embedding.shape[1], enc.geometry.grid_hw
    for guidance in (None, Guidance(attention_bias=torch.rand(h * w), target_embedding=torch.randn(c))):
        decode(sam2_model.backend, enc, prompt, False, guidance)
    assert taken == []
    decode(tiny_model.backend, tiny_model.backend.encode(image[0]), prompt, False)
    assert taken == [1]  # the SAM 1 family does take it
    with pytest.raises(ValueError, match="another model family"):
        decode(sam2_model.backend, tiny_model.backend.encode(image[0]), prompt, False)
    assert sam1_runner.SAM1_RUNNER.fast_path


def _set_object_score(backend, value: float) -> None:
    head = backend.mask_decoder.pred_obj_score_head
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


def test_object_score_is_a_second_presence_signal(image):
    """--detect-absent: similarity first (no decoder pass), then SAM 2's object score of the final mask."""
    import persam

    torch.manual_seed(0)
    model = persam.load("sam2_tiny", random_weights=True, device="cpu")
    concept = model.personalize(image[0], image[1])
    _set_object_score(model.backend, -3.0)
    plain = concept.segment(image[0])
    assert plain.present and plain.mask.any() and plain.object_score == pytest.approx(-3.0)
    absent = concept.segment(image[0], detect_absent=True)
    assert not absent.present and not absent.mask.any() and absent.object_score == pytest.approx(-3.0)
    assert "object score -3.0000 <= 0" in absent.notes[0] and absent.prompts  # its decoder passes are kept
    inst = concept.segment_instances(image[0], detect_absent=True)
    assert [r.present for r in inst.instances] == [False]
    _set_object_score(model.backend, 3.0)
    present = concept.segment(image[0], detect_absent=True)
    assert present.present and present.mask.any() and present.object_score == pytest.approx(3.0)
    concept.presence_threshold = 2.0  # the similarity test still comes first
    by_similarity = concept.segment(image[0], detect_absent=True)
    assert not by_similarity.present and by_similarity.prompts == () and by_similarity.object_score is None


def test_persam_f_concepts_and_album_index_on_sam2(sam2_model, image, tmp_path):
    from PIL import Image

    from persam.session.album import AlbumIndex
    from persam.session.concept_file import load_concept, save_concept

    concept = sam2_model.personalize(image[0], image[1], finetune=True)
    assert concept.method == "persam-f" and concept.weights.shape == (3,)
    direct = concept.segment(image[0])
    again = load_concept(save_concept(concept, tmp_path / "c.persam"), sam2_model).segment(image[0])
    np.testing.assert_array_equal(again.mask, direct.mask)
    path = tmp_path / "p.png"
    Image.fromarray(image[0]).save(path)
    index = AlbumIndex.open(tmp_path / "album.db")
    index.bind(sam2_model.backend)
    index.add(path, sam2_model.backend.encode(image[0]), dtype="float32")
    stored = index.encoded(path, sam2_model.backend)
    assert stored.high_res_features is not None and stored.geometry.resize == "square"
    np.testing.assert_array_equal(concept.segment(stored).mask, direct.mask)
    from persam.backends import EncodedImage
    from persam.errors import IncompatibleError

    index.add(path, EncodedImage(embedding=stored.embedding, geometry=stored.geometry), dtype="float32")
    with pytest.raises(IncompatibleError, match="another model family .*no high_res_0, high_res_1"):
        index.encoded(path, sam2_model.backend)
    index.close()


def test_checkpoints_load_strictly(tmp_path, tiny_checkpoint):
    from persam.backends.checkpoints import CheckpointError
    from persam.backends.registry import create_backend

    file = sam2_models.write_random_checkpoint("sam2_tiny", tmp_path / "t.pt", seed=3)
    backend = create_backend("sam2_tiny", checkpoint=file, device="cpu")
    want = torch.load(file, weights_only=True)["model"]
    got = backend.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want) and len(got) == len(want)
    assert len(backend.checkpoint_sha256) == 64
    with pytest.raises(CheckpointError, match="the reduced test Hiera|looks like the tiny test SAM"):
        create_backend("sam2.1_hiera_tiny", checkpoint=file, device="cpu")
    with pytest.raises(CheckpointError, match="looks like the tiny test SAM"):
        create_backend("sam2_tiny", checkpoint=tiny_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="fp32 only"):
        create_backend("sam2_tiny", random_weights=True, device="cpu", precision="bf16")
