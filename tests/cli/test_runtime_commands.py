"""``--runtime`` reaches the image encoder on every command that encodes photos: ``persam index``,
``persam segment`` and ``persam video`` run it through the converted encoder (its calls are counted), and
``persam segment --workers 2`` may call it from two threads at once; SAM 2 models run their three maps through it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from extras import require

require("openvino")

from conftest import synthetic_photo  # noqa: E402
from persam.backends.builders import write_random_checkpoint  # noqa: E402
from persam.backends.runtime import RuntimeEncoder  # noqa: E402
from persam.cli.main import main  # noqa: E402
from persam.io import save_label_map  # noqa: E402


@pytest.fixture
def encoder_calls(monkeypatch) -> list[str]:
    """The runtime of each call of a converted encoder."""
    calls: list[str] = []
    real = RuntimeEncoder.__call__

    def counted(self, x):
        calls.append(self.runtime)
        return real(self, x)

    monkeypatch.setattr(RuntimeEncoder, "__call__", counted)
    return calls


def test_index_segment_and_video_encode_through_the_runtime(tmp_path, monkeypatch, encoder_calls, capsys):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))  # the conversion is cached here, once
    model = [
        "--model",
        "sam_tiny",
        "--checkpoint",
        str(write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=3)),
        "--device",
        "cpu",
        "--runtime",
        "openvino",
    ]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(seed=40 + i)[0]).save(photos / f"p{i}.png")
    ref, mask = synthetic_photo(seed=5)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    refs = ["--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png")]

    assert main(["index", str(photos), "-o", str(tmp_path / "album.idx"), *model]) == 0
    assert encoder_calls == ["openvino"] * 2
    assert (
        main(["segment", *refs, "--index", str(tmp_path / "album.idx"), "-o", str(tmp_path / "from-index"), *model])
        == 0
    )
    assert encoder_calls == ["openvino"] * 3  # the reference; the photos' embeddings come from the index
    # two photos at once: the converted encoder is called from two threads (one OpenVINO request each)
    assert main(["segment", *refs, str(photos), "-o", str(tmp_path / "out"), "--workers", "2", *model]) == 0
    assert encoder_calls == ["openvino"] * 6
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["weights"]["runtime"] == "openvino"
    capsys.readouterr()
    torch_model = model[:-2]  # the same command through PyTorch: other settings, so the photos are segmented again
    assert main(["segment", *refs, str(photos), "-o", str(tmp_path / "out"), *torch_model]) == 0
    assert "by an earlier run" not in capsys.readouterr().out and len(encoder_calls) == 6

    frames = tmp_path / "frames"
    frames.mkdir()
    first_labels = None
    for i in range(3):
        frame, labels = synthetic_photo(seed=60, center=(0.5, 0.4 + 0.05 * i))
        Image.fromarray(frame).save(frames / f"{i:05d}.png")
        first_labels = labels if first_labels is None else first_labels
    save_label_map(tmp_path / "first.png", first_labels.astype(np.uint8))
    assert (
        main(["video", str(frames), "--mask", str(tmp_path / "first.png"), "-o", str(tmp_path / "video"), *model]) == 0
    )
    assert encoder_calls == ["openvino"] * 9
    assert json.loads((tmp_path / "video" / "manifest.json").read_text())["settings"]["runtime"] == "openvino"


def test_sam2_index_segment_and_bench_through_the_runtime(tmp_path, monkeypatch, encoder_calls, capsys):
    """SAM 2's three maps through ONNX Runtime (its conversion is the quicker one; OpenVINO's: tests/backends)."""
    require("sam2")
    require("onnxruntime")
    from persam.backends.sam2_models import write_random_checkpoint as write_sam2_checkpoint

    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    ckpt = write_sam2_checkpoint("sam2_tiny", tmp_path / "sam2_tiny.pt", seed=3)
    model = ["--model", "sam2_tiny", "--checkpoint", str(ckpt), "--runtime", "onnxruntime"]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(synthetic_photo(seed=40)[0]).save(photos / "p0.png")
    ref, mask = synthetic_photo(seed=5)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    refs = ["--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png")]

    assert main(["index", str(photos), "-o", str(tmp_path / "album.idx"), *model]) == 0
    assert (
        main(["segment", *refs, "--index", str(tmp_path / "album.idx"), "-o", str(tmp_path / "from-index"), *model])
        == 0
    )
    assert encoder_calls == ["onnxruntime"] * 2  # the photo (index), the reference (segment)
    assert main(["segment", *refs, str(photos), "-o", str(tmp_path / "torch"), *model[:-2]]) == 0
    assert len(encoder_calls) == 2
    runtime_mask = np.array(Image.open(next((tmp_path / "from-index").rglob("p0*.png"))))
    torch_mask = np.array(Image.open(next((tmp_path / "torch").rglob("p0*.png"))))
    a, b = runtime_mask > 0, torch_mask > 0
    assert a.any() and (a & b).sum() / (a | b).sum() >= 0.999
    capsys.readouterr()

    assert (
        main(
            [
                "bench",
                "--model",
                "sam2_tiny",
                "--random-weights",
                "--image-size",
                "64",
                "--runs",
                "1",
                "--runtime",
                "onnxruntime",
                "--json",
                str(tmp_path / "bench.json"),
            ]
        )
        == 0
    )
    assert "persam bench --runtime: sam2_tiny" in capsys.readouterr().out
    row = json.loads((tmp_path / "bench.json").read_text())["rows"][1]
    assert (row["runtime"], row["precision"]) == ("onnxruntime", "fp32")
    assert row["max_rel_diff"] < 1e-4  # over the three maps
