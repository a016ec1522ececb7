"""``persam bench`` with the tiny test backend, and its synthetic photos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from persam.cli.main import main
from persam.jobs.bench import RATIO_KEYS, TIMING_KEYS
from persam.jobs.synthetic import synthetic_photo

NUMBER_KEYS = (*TIMING_KEYS, *RATIO_KEYS, "encoder_gflop", "video_gflop", "peak_rss_mb", "image_size", "runs")
INFO_KEYS = ("model", "precision", "device", "torch_version")


def test_synthetic_photo_is_deterministic() -> None:
    a, mask_a = synthetic_photo(200, seed=3)
    b, mask_b = synthetic_photo(200, seed=3)
    c, _ = synthetic_photo(200, seed=4)
    assert a.shape == (150, 200, 3) and a.dtype == np.uint8
    assert mask_a.shape == (150, 200) and mask_a.dtype == bool
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(a, c)
    assert 0.05 < mask_a.mean() < 0.5


def test_bench_writes_every_figure(tmp_path: Path, capsys) -> None:
    report = tmp_path / "bench.json"
    argv = [
        "bench",
        "--model",
        "sam_tiny",
        "--random-weights",
        "--device",
        "cpu",
        "--runs",
        "1",
        "--image-size",
        "256",
        "--json",
        str(report),
    ]
    assert main(argv) == 0
    data = json.loads(report.read_text())
    for key in NUMBER_KEYS:
        assert isinstance(data[key], (int, float)) and math.isfinite(data[key]) and data[key] > 0, key
    for key in INFO_KEYS:
        assert isinstance(data[key], str) and data[key], key
    assert data["model"] == "sam_tiny" and data["precision"] == "fp32" and data["device"] == "cpu"
    assert data["image_size"] == 256 and data["image_hw"] == [192, 256] and data["runs"] == 1
    assert data["persam_extra_over_decoder"] == pytest.approx(data["persam_extra_s"] / data["decoder_pass_s"])
    assert data["video_gflop_over_encoder"] == pytest.approx(data["video_gflop"] / data["encoder_gflop"])
    printed = capsys.readouterr().out
    assert "decoder pass" in printed and "PerSAM-F fit" in printed and "peak resident memory" in printed
    assert "GFLOP" in printed


@pytest.mark.parametrize("option", [["--runs", "0"], ["--image-size", "8"]])
def test_bench_rejects_bad_options(option: list[str], capsys) -> None:
    assert main(["bench", "--model", "sam_tiny", "--random-weights", *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("persam: error: ")
