"""SAM 2.1's image encoder (``Sam2ImageEncoder``) through OpenVINO / ONNX Runtime on the reduced ``sam2_tiny``.

Measure: max |runtime - torch| / max |torch| per map (the embedding and the two high-resolution skips).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from extras import needs, require

require("sam2")

import persam  # noqa: E402
from conftest import RUNTIME_PARAMS as RUNTIMES  # noqa: E402
from conftest import openvino_has_bf16, synthetic_photo  # noqa: E402
from conftest import rel_diff as _rel  # noqa: E402
from persam.backends.runtime import RuntimeUnavailableError, attach_runtime  # noqa: E402
from persam.backends.sam2_models import write_random_checkpoint  # noqa: E402

RTOL = 1e-4  # relative to each map's largest value
needs_openvino = needs("openvino")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_random_checkpoint("sam2_tiny", tmp_path_factory.mktemp("ckpt") / "sam2_tiny.pt", seed=3)


def _maps(model, image) -> list[torch.Tensor]:
    enc = model.backend.encode(image)
    return [enc.embedding, *enc.high_res_features]


def _iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp32_maps_and_masks_equal_torch_and_the_conversion_is_cached(runtime, ckpt, cache, conversions, capsys):
    image, _ = synthetic_photo(150, 260, seed=0)  # not square: SAM 2 stretches it to 256 x 256
    ref_image, ref_mask = synthetic_photo(200, 260, seed=4)
    torch_model = persam.load("sam2_tiny", ckpt, device="cpu")
    first = persam.load("sam2_tiny", ckpt, device="cpu", runtime=runtime)
    assert conversions[runtime] == 1 and first.backend.runtime_encoder.converted
    assert "converting the sam2_tiny image encoder" in capsys.readouterr().err

    ref, out = _maps(torch_model, image), _maps(first, image)
    assert [m.shape for m in out] == [(1, 256, 16, 16), (1, 32, 64, 64), (1, 64, 32, 32)]
    assert [m.shape for m in ref] == [m.shape for m in out]
    assert all(m.dtype == torch.float32 and m.is_contiguous() for m in out)
    assert max(_rel(a, b) for a, b in zip(out, ref)) < RTOL
    assert first.backend.encoder_calls == 1

    masks = [m.personalize(ref_image, ref_mask).segment(image).mask for m in (torch_model, first)]
    assert masks[0].any() and _iou(*masks) >= 0.999

    second = persam.load("sam2_tiny", ckpt, device="cpu", runtime=runtime)
    assert conversions[runtime] == 1, "the second load converted again"
    assert not second.backend.runtime_encoder.converted
    assert second.backend.runtime_encoder.folder == first.backend.runtime_encoder.folder
    assert "converting" not in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(_maps(second, image), out))
    assert [p.name for p in cache.iterdir()] == [first.backend.runtime_encoder.folder.name]


@needs_openvino
def test_openvino_bf16_is_a_compile_hint_close_to_fp32(cache, conversions):
    image, _ = synthetic_photo(150, 260, seed=0)
    torch.manual_seed(0)
    ref = _maps(persam.load("sam2_tiny", random_weights=True, device="cpu"), image)
    torch.manual_seed(0)
    if not openvino_has_bf16():  # OpenVINO would run fp32 and call it bf16: refused before converting
        with pytest.raises(RuntimeUnavailableError, match="needs a CPU with bf16 arithmetic"):
            persam.load("sam2_tiny", random_weights=True, device="cpu", precision="bf16", runtime="openvino")
        assert conversions["openvino"] == 0
        return
    model = persam.load("sam2_tiny", random_weights=True, device="cpu", precision="bf16", runtime="openvino")
    assert model.backend.precision == "bf16" and model.backend.runtime_encoder.folder is None
    assert conversions["openvino"] == 1 and not cache.exists()  # random weights: converted for this run only
    out = _maps(model, image)
    assert all(m.dtype == torch.float32 for m in out)
    assert 1e-4 < max(_rel(a, b) for a, b in zip(out, ref)) < 0.1  # really bf16 (8 bits of mantissa)


def test_refusals_are_one_line(cache):
    with pytest.raises(ValueError, match="fp32 only with --runtime torch .*use --runtime openvino$"):
        persam.load("sam2_tiny", random_weights=True, device="cpu", precision="bf16", runtime="torch")
    with pytest.raises(
        RuntimeUnavailableError,
        match="onnxruntime runs the encoder in fp32 only on CPUs; use --runtime openvino for --precision bf16",
    ):
        persam.load("sam2_tiny", random_weights=True, device="cpu", precision="bf16", runtime="onnxruntime")
    model = persam.load("sam2_tiny", random_weights=True, device="cpu")
    on_gpu = dataclasses.replace(model.backend, device=torch.device("cuda"))
    with pytest.raises(RuntimeUnavailableError, match="CPU only; use --device cpu, or --runtime torch on cuda"):
        attach_runtime(on_gpu, "openvino")
