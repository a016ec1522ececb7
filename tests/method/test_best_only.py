"""Keeping each prompt's best mask (the refinement's choice) equals choosing it from the three masks.

``decode_many(..., best_only=True)`` on the re-associated SAM 1 decoder runs the IoU head before the
upscaling and upscales the chosen mask alone; the official modules and SAM 2 choose after the pass.
"""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_photo
from extras import installed
from persam.method import factored
from persam.method.decoder import Prompt, decode_many


def _prompts() -> list[Prompt]:
    """Prompts of one layout (two points and a mask), spread over a small photo."""
    g = torch.Generator().manual_seed(7)
    return [
        Prompt(
            points_xy=torch.tensor([[15.0 + 11 * i, 20.0 + 7 * (i % 3)], [90.0 - 5 * i, 60.0]]),
            labels=torch.tensor([1, i % 2]),
            mask_logits=torch.randn(64, 64, generator=g) * 3,
        )
        for i in range(12)
    ]


class _SpreadScores(torch.nn.Module):
    """An IoU head whose choice changes from prompt to prompt: a random-weight tiny decoder's IoU token
    varies too little for its own head to choose differently. A fixed function of the token."""

    def __init__(self, head: torch.nn.Module, width: int) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mix", torch.randn(width, 4, generator=torch.Generator().manual_seed(3)))

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        return self.head(token) + 10 * torch.sin(1e3 * (token @ self.mix))


def _backend(name: str):
    if name.startswith("sam2") and not installed("sam2"):
        pytest.skip("the sam2 package is not installed")
    from persam.backends import create_backend

    torch.manual_seed(0)
    backend = create_backend(name, random_weights=True, device="cpu")
    decoder = backend.mask_decoder
    decoder.iou_prediction_head = _SpreadScores(decoder.iou_prediction_head, decoder.transformer_dim)
    return backend


@pytest.mark.parametrize(
    "name, exact", [("sam_tiny", False), ("sam_tiny", True), ("sam2_tiny", False)], ids=["fast", "exact", "sam2"]
)
@pytest.mark.parametrize("photos", [False, True], ids=["one-image", "one-photo-each"])
def test_best_only_equals_the_best_of_three(name, exact, photos):
    backend = _backend(name)
    prompts = _prompts()
    if photos:
        encoded = [backend.encode(synthetic_photo(96, 128, seed=i)[0]) for i in range(len(prompts))]
    else:
        encoded = backend.encode(synthetic_photo(96, 128, seed=1)[0])
    low = encoded[0].geometry.low_res_hw if photos else encoded.geometry.low_res_hw
    prompts = [Prompt(p.points_xy, p.labels, None, p.mask_logits[: low[0], : low[1]]) for p in prompts]
    three = decode_many(backend, encoded, prompts, multimask=True, exact=exact)
    best = decode_many(backend, encoded, prompts, multimask=True, exact=exact, best_only=True)
    chosen = {int(torch.argmax(d.iou)) for d in three}
    assert len(chosen) > 1, "the prompts should not all choose the same mask"
    for full, one in zip(three, best):
        logits, score = full.best()
        assert one.low_res_logits.shape == (1, *logits.shape) and one.iou.shape == (1,)
        assert abs(float(one.iou[0]) - score) <= 1e-6
        torch.testing.assert_close(one.low_res_logits[0], logits, atol=1e-5 * float(logits.abs().max()), rtol=0)
        assert one.object_score == full.object_score


def test_the_fast_decoder_upscales_the_chosen_mask_only(monkeypatch):
    backend = _backend("sam_tiny")
    encoded = backend.encode(synthetic_photo(96, 128, seed=1)[0])
    prompts = [Prompt(p.points_xy, p.labels) for p in _prompts()[:3]]
    formed = []
    real = factored._masks

    def counting(decoder, keys, grid_hw, hyper):
        formed.append(hyper.shape[1])
        return real(decoder, keys, grid_hw, hyper)

    monkeypatch.setattr(factored, "_masks", counting)
    decode_many(backend, encoded, prompts, multimask=True)
    decode_many(backend, encoded, prompts, multimask=True, best_only=True)
    assert formed == [3, 1]
