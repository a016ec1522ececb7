"""``persam bench --prior matcher`` with the tiny SAM and the tiny DINOv2: one interleaved run, every figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from extras import require

require("ot")
require("scipy")

from persam.cli.main import main  # noqa: E402


def test_matcher_bench_writes_its_figures(tmp_path: Path, capsys, tiny_dino) -> None:
    report = tmp_path / "matcher.json"
    argv = ["bench", "--prior", "matcher", "--dino", "dinov2_vits14", "--model", "sam_tiny", "--random-weights"]
    argv += ["--device", "cpu", "--runs", "1", "--image-size", "128", "--json", str(report)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "matcher beyond the encoders" in out and "x PerSAM's (target <= 10 x)" in out
    data = json.loads(report.read_text())
    for key in ("encoder_s", "dino_encoder_s", "persam_extra_s", "matcher_extra_s", "decode_s", "transport_s"):
        assert isinstance(data[key], float) and math.isfinite(data[key]) and data[key] > 0, key
    assert data["matcher_over_persam"] == pytest.approx(data["matcher_extra_s"] / data["persam_extra_s"], rel=1e-9)
    # the authors' FSS setting: 8 centres, every 4-, 5- and 6-subset, one prompt each, batched by size
    assert data["matcher_decoder_prompts"] == 70 + 56 + 28
    assert data["matcher_decoder_calls"] == 4  # 70 = 64 + 6, 56, 28
    assert 1 <= data["persam_decoder_passes"] <= 4  # PerSAM: one pass and its two cascaded refinements
    assert 1 <= data["transport_problems"] <= data["matcher_decoder_prompts"]
    assert data["dino"] == "dinov2_vits14" and data["model"] == "sam_tiny"
    assert (
        data["command"].startswith("persam bench --model sam_tiny --random-weights")
        and "--prior matcher" in data["command"]
    )
    assert "machine" in data


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dino", "dinov2_vits14"], "--dino has no effect without --prior matcher"),
        (["--prior", "matcher", "--dino", "vit_x"], "unknown DINOv2 model"),
        (["--prior", "matcher", "--precision", "bf16"], "--precision has no effect with --prior matcher"),
    ],
)
def test_matcher_bench_refuses_what_it_cannot_use(extra, message, capsys) -> None:
    assert main(["bench", "--model", "sam_tiny", "--random-weights", *extra]) == 2
    assert message in capsys.readouterr().err
