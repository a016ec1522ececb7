"""The decoder batched across photos: each PerSAM stage one call over N photos equals photo-by-photo decoding.

Masks are compared as IoU of the thresholded low-res logits (>= 0.999) and scores within 1e-4, for the
similarity prior (PerSAM) and PerSAM-F, on the re-associated fast path and the official modules (``exact``)
of the SAM 1 family, and on SAM 2.
"""

from __future__ import annotations

import pytest
import torch

from conftest import rel_diff, synthetic_photo
from extras import installed
from persam.method import decoder as decoder_module
from persam.method.decoder import Guidance, Prompt, decode_many
from persam.method.persam import segment_persam, segment_persam_photos
from persam.method.persam_f import segment_persam_f, segment_persam_f_photos
from persam.method.settings import PersamSettings
from persam.method.target import TargetFeatures, masked_features

SIZES = [(120, 160, 1), (180, 240, 2), (200, 150, 3), (96, 128, 4)]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0, b > 0
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _photos(backend):
    """A target learnt on one synthetic photo, and four photos of different sizes and object places."""
    ref, mask = synthetic_photo(120, 160, seed=50)
    encoded_ref = backend.encode(ref)
    target = TargetFeatures.from_cells([masked_features(encoded_ref, torch.from_numpy(mask))])
    photos = [
        backend.encode(synthetic_photo(h, w, seed=s, center=(0.3 + 0.1 * s, 0.6 - 0.07 * s))[0]) for h, w, s in SIZES
    ]
    return target, photos


def _same(batched, alone) -> None:
    assert len(batched) == len(alone)
    for got, want in zip(batched, alone):
        assert _iou(got.low_res_logits, want.low_res_logits) >= 0.999
        # the random tiny decoder's logits are small and its masks change little with guidance: the logits too
        assert rel_diff(got.low_res_logits, want.low_res_logits) <= 1e-4
        assert abs(got.score - want.score) <= 1e-4
        assert torch.equal(got.points_xy, want.points_xy)
        assert got.box_xyxy == want.box_xyxy
        assert [p.to_dict() for p in got.prompts] == [p.to_dict() for p in want.prompts]


def _counting(monkeypatch) -> list[int]:
    """The number of prompts of each decoder call."""
    calls: list[int] = []
    original = decoder_module.predict

    def counted(backend, encoded, points, boxes, masks, *args, **kwargs):
        given = points[0] if points is not None else boxes if boxes is not None else masks
        calls.append(int(given.shape[0]))
        return original(backend, encoded, points, boxes, masks, *args, **kwargs)

    monkeypatch.setattr(decoder_module, "predict", counted)
    return calls


@pytest.fixture(scope="module")
def sam1():
    from persam.backends import create_backend

    torch.manual_seed(0)
    backend = create_backend("sam_tiny", random_weights=True, device="cpu")
    return backend, *_photos(backend)


@pytest.fixture(scope="module")
def sam2():
    if not installed("sam2"):
        pytest.skip("the sam2 package is not installed")
    from persam.backends import create_backend

    torch.manual_seed(0)
    backend = create_backend("sam2_tiny", random_weights=True, device="cpu")
    return backend, *_photos(backend)


@pytest.mark.parametrize(
    "settings",
    [
        PersamSettings(),
        PersamSettings(refinement=False),  # the guided first pass alone (each photo's own attention bias)
        PersamSettings(guided_attention=False, semantic_prompt=False),
    ],
    ids=["persam", "first-pass", "unguided"],
)
def test_persam_photos_equal_photo_by_photo(sam1, settings, monkeypatch):
    backend, target, photos = sam1
    alone = [segment_persam(backend, e, target, settings) for e in photos]
    calls = _counting(monkeypatch)
    batched = segment_persam_photos(backend, photos, target, settings)
    # guided first pass, refinement 1, refinement 2: one call each
    assert calls == [len(photos)] * (3 if settings.refinement else 1)
    _same(batched, alone)


def test_persam_f_photos_equal_photo_by_photo(sam1, monkeypatch):
    backend, target, photos = sam1
    weights = torch.tensor([0.2, 0.5, 0.3])
    alone = [segment_persam_f(backend, e, target, weights) for e in photos]
    calls = _counting(monkeypatch)
    batched = segment_persam_f_photos(backend, photos, target, weights)
    assert calls == [len(photos)] * 3  # three-scale pass, refinement 1, refinement 2
    _same(batched, alone)


def test_official_modules_batched_equal_photo_by_photo(sam1, monkeypatch):
    """``exact``: the official submodules with a (B, C, h, w) batch of images, guided and not."""
    backend, target, photos = sam1
    prompts = [Prompt(points_xy=torch.tensor([[20.0 + 9 * i, 30.0]]), labels=torch.tensor([1])) for i in range(4)]
    h, w = backend.grid_hw
    for guided in (False, True):
        guides = [
            Guidance(attention_bias=torch.rand(h * w, generator=torch.Generator().manual_seed(i)), target_embedding=t)
            if guided
            else None
            for i, t in enumerate([target.mean] * len(photos))
        ]
        alone = [decode_many(backend, e, [p], True, g, exact=True)[0] for e, p, g in zip(photos, prompts, guides)]
        batched = decode_many(backend, photos, prompts, True, guides, exact=True)
        for got, want in zip(batched, alone):
            assert (got.low_res_logits - want.low_res_logits).abs().max() <= 1e-4
            assert (got.iou - want.iou).abs().max() <= 1e-4


def test_sam2_photos_equal_photo_by_photo(sam2, monkeypatch):
    backend, target, photos = sam2
    alone = [segment_persam(backend, e, target, PersamSettings()) for e in photos]
    weights = torch.tensor([0.2, 0.5, 0.3])
    alone_f = [segment_persam_f(backend, e, target, weights) for e in photos]
    calls = _counting(monkeypatch)
    batched = segment_persam_photos(backend, photos, target, PersamSettings())
    batched_f = segment_persam_f_photos(backend, photos, target, weights)
    assert calls == [len(photos)] * 6
    _same(batched, alone)
    _same(batched_f, alone_f)
    for got, want in zip(batched + batched_f, alone + alone_f):
        assert abs(got.object_score - want.object_score) <= 1e-4
