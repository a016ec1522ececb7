"""Shared fixtures: a tiny random-weight SAM and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extras import needs
from persam.jobs.synthetic import tiled_photo

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "perseg-sample"


#: (H, W, 3) uint8 textured photo with a red ellipse, and the ellipse's (H, W) bool mask.
synthetic_photo = tiled_photo


#: The inference runtimes as test parameters, each skipped where its package is missing (run, and failed, in CI).
RUNTIME_PARAMS = [pytest.param(r, marks=needs(r)) for r in ("openvino", "onnxruntime")]


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference over the largest value of ``b``: max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """persam's cache of converted encoders, in a folder of this test's own (PERSAM_HOME)."""
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "checkpoints" / "encoders"


@pytest.fixture()
def conversions(monkeypatch) -> dict[str, int]:
    """Counts the calls of each inference runtime's converter, by runtime name."""
    from persam.backends.runtime import RUNTIME_IMPLS

    counts = {name: 0 for name in RUNTIME_IMPLS}
    for name, impl in RUNTIME_IMPLS.items():
        original = impl.convert

        def counting(*args, _name=name, _original=original):
            counts[_name] += 1
            return _original(*args)

        monkeypatch.setattr(impl, "convert", counting)
    return counts


def openvino_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this CPU (AVX512-BF16 or AMX); it runs fp32 elsewhere."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="session")
def tiny_model():
    """A session over the tiny SAM (official module classes, seeded random weights)."""
    import persam

    torch.manual_seed(0)
    return persam.load("sam_tiny", random_weights=True, device="cpu")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A full state dict of the tiny SAM written as an official-layout checkpoint."""
    from persam.backends.builders import write_random_checkpoint

    return write_random_checkpoint("sam_tiny", tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth", seed=0)


@pytest.fixture
def refs(tmp_path: Path) -> list[str]:
    """``--ref REF --ref-mask MASK`` of a synthetic 160x120 reference photo saved in ``tmp_path``."""
    ref, mask = synthetic_photo(120, 160, seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.jpg")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    return ["--ref", str(tmp_path / "ref.jpg"), "--ref-mask", str(tmp_path / "ref_mask.png")]


@pytest.fixture
def photo():
    return synthetic_photo()


@pytest.fixture
def tiny_dino(monkeypatch):
    """The model's DINOv2 (the matcher prior's) shrunk to two blocks of the same architecture, so a
    command with it runs in seconds."""
    import functools

    import persam.backends.dinov2 as dino_module

    tiny = functools.partial(dino_module.create_dino, architecture={"embed_dim": 48, "depth": 2, "num_heads": 2})
    monkeypatch.setattr(dino_module, "create_dino", tiny)  # what DinoChoice, the session's DINOv2, builds


@pytest.fixture
def one_pixel_prompt_masks(monkeypatch) -> None:
    """SAM's mask for any prompts becomes one pixel (at row 5, column 5): a reference made from a box or
    clicks that covers no feature cell, whatever the random weights draw."""
    import dataclasses

    import persam.session.photo as photo_module

    real = photo_module.PersamModel.mask_from_prompts

    def one_pixel(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        mask = np.zeros_like(result.mask)
        mask[5, 5] = True
        return dataclasses.replace(result, mask=mask)

    monkeypatch.setattr(photo_module.PersamModel, "mask_from_prompts", one_pixel)
