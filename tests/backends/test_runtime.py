"""The image encoder through OpenVINO / ONNX Runtime: exact in fp32, converted once, cached safely."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import persam
from conftest import RUNTIME_PARAMS as RUNTIMES
from conftest import openvino_has_bf16, synthetic_photo
from conftest import rel_diff as _rel
from extras import needs
from persam.backends.builders import write_random_checkpoint
from persam.backends.runtime import RUNTIME_IMPLS, RuntimeUnavailableError, attach_runtime

RTOL = 1e-4  # relative to the largest embedding value


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return write_random_checkpoint("sam_tiny", tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3)


def _embedding(model, image) -> torch.Tensor:
    return model.backend.encode(image).embedding


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp32_runtime_matches_torch_and_is_converted_once(runtime, tiny_ckpt, cache, conversions, capsys):
    image, _ = synthetic_photo(200, 260, seed=0)
    ref = _embedding(persam.load("sam_tiny", tiny_ckpt, device="cpu"), image)
    first = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime=runtime)
    assert conversions[runtime] == 1 and first.backend.runtime_encoder.converted
    assert "converting the sam_tiny image encoder" in capsys.readouterr().err
    out = _embedding(first, image)
    assert out.shape == ref.shape and out.dtype == torch.float32 and out.is_contiguous()
    assert _rel(out, ref) < RTOL
    assert first.backend.encoder_calls == 1

    second = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime=runtime)
    assert conversions[runtime] == 1, "the second load converted again"
    assert not second.backend.runtime_encoder.converted
    assert second.backend.runtime_encoder.folder == first.backend.runtime_encoder.folder
    assert "converting" not in capsys.readouterr().err
    assert torch.equal(_embedding(second, image), out)
    # Nothing half-written is left beside the cached folder.
    assert [p.name for p in cache.iterdir()] == [first.backend.runtime_encoder.folder.name]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_masks_equal_torch_in_fp32(runtime, tiny_ckpt, cache):
    ref_image, ref_mask = synthetic_photo(200, 260, seed=0)
    target, _ = synthetic_photo(200, 260, seed=1, center=(0.55, 0.45))
    masks = {}
    for name in ("torch", runtime):
        model = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime=name)
        masks[name] = model.personalize(ref_image, ref_mask).segment(target).mask
    a, b = masks["torch"], masks[runtime]
    iou = (a & b).sum() / max((a | b).sum(), 1)
    assert iou >= 0.999


@needs("openvino")
def test_damaged_or_stale_cache_is_rebuilt(tiny_ckpt, cache, conversions, capsys):
    image, _ = synthetic_photo(120, 160, seed=2)
    model = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    good = _embedding(model, image)
    folder = model.backend.runtime_encoder.folder
    weights = folder / "encoder.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()

    again = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    err = capsys.readouterr().err
    assert "stale or damaged" in err and "SHA-256" in err
    assert conversions["openvino"] == 2 and again.backend.runtime_encoder.converted
    assert torch.equal(_embedding(again, image), good)

    manifest = folder / "manifest.json"  # a manifest from another runtime version: stale
    manifest.write_text(manifest.read_text().replace('"runtime_version": "', '"runtime_version": "0.0-'))
    persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    assert conversions["openvino"] == 3 and "another runtime version" in capsys.readouterr().err


@needs("openvino")
def test_interrupted_conversion_leaves_nothing(tiny_ckpt, cache, monkeypatch):
    impl = RUNTIME_IMPLS["openvino"]
    original = impl.convert

    def broken(encoder, example, folder):
        original(encoder, example, folder)  # files written, then the process is "stopped"
        raise KeyboardInterrupt

    monkeypatch.setattr(impl, "convert", broken)
    with pytest.raises(KeyboardInterrupt):
        persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    assert list(cache.iterdir()) == []


@needs("openvino")
def test_random_weights_are_converted_for_the_run_only(cache, conversions):
    model = persam.load("sam_tiny", device="cpu", random_weights=True, runtime="openvino")
    assert model.backend.runtime_encoder.folder is None and conversions["openvino"] == 1
    assert not cache.exists()
    image, _ = synthetic_photo(64, 64, seed=0)
    assert model.backend.encode(image).embedding.shape == (1, 32, 16, 16)


@needs("openvino")
def test_bf16_runs_close_to_fp32_from_the_same_conversion(tiny_ckpt, cache, conversions):
    image, _ = synthetic_photo(200, 260, seed=0)
    ref = _embedding(persam.load("sam_tiny", tiny_ckpt, device="cpu"), image)
    fp32 = _embedding(persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino"), image)
    assert _rel(fp32, ref) < RTOL
    if not openvino_has_bf16():  # OpenVINO would run fp32 and call it bf16: refused, before any conversion
        with pytest.raises(RuntimeUnavailableError, match="needs a CPU with bf16 arithmetic"):
            persam.load("sam_tiny", tiny_ckpt, device="cpu", precision="bf16", runtime="openvino")
        assert conversions["openvino"] == 1
        return
    bf16 = persam.load("sam_tiny", tiny_ckpt, device="cpu", precision="bf16", runtime="openvino")
    assert conversions["openvino"] == 1  # the precision is a compile hint: one conversion serves both
    out = _embedding(bf16, image)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert 1e-4 < _rel(out, ref) < 0.1  # really bf16 (8 bits of mantissa), not fp32 under another name


@needs("openvino")
def test_bf16_refusal_is_one_line_from_the_cli(tiny_ckpt, cache, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from persam.backends import builders, runtime_impls
    from persam.cli.main import main

    def no_bf16(self, precision: str) -> None:  # a CPU without bf16 arithmetic, whatever this one has
        if precision == "bf16":
            raise RuntimeUnavailableError(runtime_impls.NO_BF16)

    def not_built(*args) -> None:
        raise AssertionError("the model was built before the runtime's refusal")

    monkeypatch.setattr(runtime_impls.OpenVino, "check", no_bf16)
    monkeypatch.setattr(builders, "build_parts", not_built)  # refused before building and hashing
    image, mask = synthetic_photo(64, 64, seed=0)
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    code = main(
        [
            "personalize",
            "--ref",
            str(tmp_path / "ref.png"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(tiny_ckpt),
            "--runtime",
            "openvino",
            "--precision",
            "bf16",
            "-o",
            str(tmp_path / "c.persam"),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and "needs a CPU with bf16 arithmetic" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c.persam").exists()


def test_missing_extra_names_the_pip_command(tiny_ckpt, cache, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(RuntimeUnavailableError) as info:
        persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    message = str(info.value)
    assert "\n" not in message and "pip install 'persam[openvino]'" in message


def test_missing_extra_is_a_usage_error_on_the_command_line(tiny_ckpt, tmp_path, cache, monkeypatch, capsys):
    from persam.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    ref = tmp_path / "ref.png"
    from PIL import Image

    image, mask = synthetic_photo(64, 64, seed=0)
    Image.fromarray(image).save(ref)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    code = main(
        [
            "personalize",
            "--ref",
            str(ref),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "-o",
            str(tmp_path / "c.persam"),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(tiny_ckpt),
            "--device",
            "cpu",
            "--runtime",
            "onnxruntime",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'persam[onnx]'" in err and "Traceback" not in err


def test_refusals_are_one_line(tiny_ckpt, cache):
    model = persam.load("sam_tiny", tiny_ckpt, device="cpu")
    on_gpu = dataclasses.replace(model.backend, device=torch.device("cuda"))
    with pytest.raises(RuntimeUnavailableError, match="CPU only; use --device cpu, or --runtime torch on cuda"):
        attach_runtime(on_gpu, "openvino")
    with pytest.raises(RuntimeUnavailableError, match="fp32 only"):
        persam.load("sam_tiny", tiny_ckpt, device="cpu", precision="bf16", runtime="onnxruntime")
    with pytest.raises(RuntimeUnavailableError, match="unknown runtime"):
        attach_runtime(model.backend, "tensorrt")


@pytest.mark.slow
@needs("openvino")
def test_litemedsam_real_weights_through_openvino(cache):
    image, _ = synthetic_photo(240, 320, seed=0)
    ref = _embedding(persam.load("litemedsam", device="cpu"), image)
    model = persam.load("litemedsam", device="cpu", runtime="openvino")
    assert _rel(_embedding(model, image), ref) < RTOL


@needs("openvino")
def test_bench_compares_runtimes_with_torch_fp32(tmp_path, cache, capsys):
    import json

    from persam.cli.main import main

    out = tmp_path / "bench.json"
    bf16 = ["--runtime", "openvino:bf16"] if openvino_has_bf16() else []
    code = main(
        [
            "bench",
            "--model",
            "sam_tiny",
            "--random-weights",
            "--image-size",
            "64",
            "--runs",
            "1",
            "--runtime",
            "openvino",
            *bf16,
            "--json",
            str(out),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "x torch" in table and "frame ms" in table
    rows = json.loads(out.read_text())["rows"]
    expected = [("torch", "fp32"), ("openvino", "fp32")] + ([("openvino", "bf16")] if bf16 else [])
    assert [(r["runtime"], r["precision"]) for r in rows] == expected
    assert rows[0]["encoder_speedup"] == 1.0 and rows[0]["max_rel_diff"] == 0.0
    assert rows[1]["max_rel_diff"] < RTOL and rows[1]["converted"]
    # no timing ratios (one run on a shared machine says nothing about speed: that is the benchmarks' job);
    # the reported values are what they are defined to be: positive times, speed-ups against PyTorch fp32's row
    for r in rows:
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("encoder_s", "photo_s", "frame_s")), r
        for stage in ("encoder", "photo", "frame"):
            assert r[f"{stage}_speedup"] == pytest.approx(rows[0][f"{stage}_s"] / r[f"{stage}_s"], rel=1e-9), r
    assert rows[0]["photo_speedup"] == rows[0]["frame_speedup"] == 1.0


def test_bench_runtime_spec_is_checked():
    from persam.jobs.runtime_bench import parse_config

    assert parse_config("openvino:bf16") == ("openvino", "bf16")
    assert parse_config("onnxruntime", "fp32") == ("onnxruntime", "fp32")
    with pytest.raises(ValueError, match="RUNTIME:PRECISION"):
        parse_config("openvino:int4")
