"""Every option is honoured or refused: options that would be ignored exit 2 with one line naming them,
before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam.session.photo
from persam.cli.main import main

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: refusals must come first."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(persam.session.photo, "load", load)


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("persam: error: ")
    return lines[0]


def _files(tmp_path: Path) -> dict[str, str]:
    photo = np.full((40, 50, 3), 120, np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:30] = 255
    Image.fromarray(photo).save(tmp_path / "p.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    (tmp_path / "c.persam").write_bytes(b"")
    (tmp_path / "a.idx").write_bytes(b"")
    return {
        "p": str(tmp_path / "p.png"),
        "m": str(tmp_path / "m.png"),
        "c": str(tmp_path / "c.persam"),
        "idx": str(tmp_path / "a.idx"),
        "o": str(tmp_path / "out"),
    }


SEGMENT_CASES = [
    (["--concept", "{c}", "--ref", "{p}", "--ref-mask", "{m}"], ["--ref", "--ref-mask"]),
    (["--concept", "{c}", "--label", "2"], ["--label"]),
    (["--concept", "{c}", "--finetune"], ["--finetune"]),
    (["--concept", "{c}", "--without", "refinement"], ["--without"]),
    (["--concept", "{c}", "--ref-mask", "{m}"], ["--ref-mask"]),
    (["--concept", "{c}", "--index", "{idx}", "--precision", "bf16"], ["--precision"]),
    (["--concept", "{c}", "--index", "{idx}", "--runtime", "openvino"], ["--runtime"]),
]


@pytest.mark.parametrize("extra,named", SEGMENT_CASES)
def test_segment_refuses_ignored_options(extra, named, tmp_path, capsys, no_model) -> None:
    f = _files(tmp_path)
    argv = ["segment", *[a.format(**f) for a in extra], "-o", f["o"], *TINY]
    if "--index" not in extra:
        argv.insert(1, f["p"])
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert all(name in line for name in named), line


def test_segment_refuses_targets_with_index(tmp_path, capsys, no_model) -> None:
    f = _files(tmp_path)
    assert main(["segment", f["p"], "--index", f["idx"], "--concept", f["c"], "-o", f["o"], *TINY]) == 2
    line = one_line_error(capsys)
    assert "--index" in line and "photos" in line and "not both" in line


@pytest.mark.parametrize(
    "extra,named",
    [
        (["--method", "persam-f"], ["--method"]),
        (["--without", "refinement"], ["--without"]),
        (["-o", "x"], ["--output"]),
        (["--model", "vit_b"], ["--model"]),
        (["--precision", "bf16", "--device", "cpu"], ["--device", "--precision"]),
        (["--checkpoint", "w.pth"], ["--checkpoint"]),
    ],
)
def test_eval_perseg_pred_refuses_run_options(extra, named, tmp_path, capsys, no_model) -> None:
    root = tmp_path / "PerSeg"
    for kind, ext in (("Images", "jpg"), ("Annotations", "png")):
        (root / kind / "ball").mkdir(parents=True)
        for nn in ("00", "01"):
            Image.fromarray(np.zeros((20, 20, 3), np.uint8) if ext == "jpg" else np.eye(20, dtype=np.uint8) * 255).save(
                root / kind / "ball" / f"{nn}.{ext}"
            )
    assert main(["eval", "perseg", str(root), "--pred", str(tmp_path), *extra]) == 2
    line = one_line_error(capsys)
    assert all(name in line for name in named) and "--pred" in line, line


@pytest.mark.parametrize(
    "extra,named",
    [
        (["--method", "persam"], ["--method"]),
        (["--output", "x"], ["--output"]),
        (["--model", "sam_tiny", "--random-weights"], ["--model", "--random-weights"]),
    ],
)
def test_eval_davis_pred_refuses_run_options(extra, named, tmp_path, capsys, no_model) -> None:
    assert main(["eval", "davis", str(tmp_path), "--pred", str(tmp_path), *extra]) == 2
    line = one_line_error(capsys)
    assert all(name in line for name in named) and "--pred" in line, line


def test_bench_refuses_checkpoint_with_random_weights(tmp_path, capsys) -> None:
    assert main(["bench", "--model", "sam_tiny", "--random-weights", "--checkpoint", str(tmp_path / "w.pth")]) == 2
    assert "--random-weights" in one_line_error(capsys)


def test_checkpoint_with_random_weights_is_refused(tmp_path, capsys, no_model) -> None:
    f = _files(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"x")
    assert (
        main(
            [
                "personalize",
                "--ref",
                f["p"],
                "--ref-mask",
                f["m"],
                "-o",
                str(tmp_path / "x.persam"),
                "--checkpoint",
                str(tmp_path / "w.pth"),
                *TINY,
            ]
        )
        == 2
    )
    assert "--random-weights" in one_line_error(capsys)


def test_dreambooth_train_refuses_prior_weight_without_class_data(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "dreambooth",
                "train",
                str(tmp_path),
                "--base-model",
                str(tmp_path),
                "--instance-prompt",
                "x",
                "-o",
                str(tmp_path / "o"),
                "--prior-weight",
                "0.5",
            ]
        )
        == 2
    )
    line = one_line_error(capsys)
    assert "--prior-weight" in line and "--class-data" in line


def test_method_refusals_are_usage_errors(tmp_path, capsys) -> None:
    """The method layer refuses PerSAM-F with switched-off components (real tiny model): exit 2, one line."""
    f = _files(tmp_path)
    argv = ["personalize", "--ref", f["p"], "--ref-mask", f["m"], "--finetune", "--without", "semantic-prompt"]
    assert main([*argv, "-o", str(tmp_path / "x.persam"), *TINY]) == 2
    line = one_line_error(capsys)
    assert "semantic-prompt" in line and "--finetune" in line
    assert not (tmp_path / "x.persam").exists()


def test_output_paths_are_checked_before_the_model(tmp_path, capsys, no_model) -> None:
    f = _files(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ["personalize", "--ref", f["p"], "--ref-mask", f["m"], "-o", str(folder), *TINY],
        ["personalize", "--ref", f["p"], "--ref-mask", f["m"], "-o", str(blocker / "c.persam"), *TINY],
        ["bench", "--model", "sam_tiny", "--random-weights", "--json", str(folder)],
        [
            "dreambooth",
            "train",
            str(tmp_path),
            "--base-model",
            str(tmp_path),
            "--instance-prompt",
            "x",
            "-o",
            str(blocker),
        ],
        ["dreambooth", "prepare", f["p"], "--ref", f["p"], "--ref-mask", f["m"], "-o", str(blocker), *TINY],
        ["index", f["p"], "-o", str(blocker / "album.idx"), *TINY],
        ["index", f["p"], "-o", str(blocker / "store"), *TINY],  # a folder name: an embedding store
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        line = one_line_error(capsys)
        assert "is a folder" in line or "is a file" in line, line
