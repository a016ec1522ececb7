"""The help and ``persam models`` answer without importing torch; --model / --device are checked by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import persam
from persam.cli.main import build_parser, main

SRC = str(Path(persam.__file__).resolve().parents[1])

PROBE = """
import sys
from persam.cli.main import build_parser, main
build_parser()
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit:
        pass
names = ("torch", "torchvision", "segment_anything", "mobile_sam", "PIL", "numpy")
heavy = sorted(m for m in names if m in sys.modules)
print("IMPORTED", ",".join(heavy))
"""


def imported_after(argvs: list[list[str]], tmp_path: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "PERSAM_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argvs=argvs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    line = [text for text in out.splitlines() if text.startswith("IMPORTED")][-1]
    return [m for m in line.split(" ", 1)[1].split(",") if m]


def test_help_of_every_command_imports_no_torch(tmp_path: Path) -> None:
    commands = [
        ["--help"],
        ["segment", "--help"],
        ["personalize", "--help"],
        ["index", "--help"],
        ["video", "--help"],
        ["eval", "--help"],
        ["eval", "perseg", "--help"],
        ["eval", "davis", "--help"],
        ["bench", "--help"],
        ["models", "--help"],
        ["dreambooth", "prepare", "--help"],
        ["dreambooth", "train", "--help"],
    ]
    assert "torch" not in imported_after(commands, tmp_path)


def test_models_imports_no_torch(tmp_path: Path) -> None:
    imported = imported_after([["models"]], tmp_path)
    assert "torch" not in imported and "segment_anything" not in imported


def test_models_lists_the_offered_backends_only(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("vit_h", "vit_l", "vit_b", "vit_t", "litemedsam"):
        assert f"\n{name} " in out
    assert "sam_tiny" not in out


@pytest.mark.parametrize(
    "command",
    [["segment"], ["personalize"], ["index"], ["video"], ["eval", "perseg"], ["bench"], ["dreambooth", "prepare"]],
)
def test_model_choices_come_from_the_registry(command, capsys) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    text = capsys.readouterr().out
    assert "vit_t" in text and "litemedsam" in text and "sam_tiny" not in text and "cuda:N" in text


def test_test_backend_accepted_unknown_refused(capsys) -> None:
    parser = build_parser()
    args = parser.parse_args(["index", "x.jpg", "-o", "a.idx", "--model", "sam_tiny", "--device", "cuda:1"])
    assert args.model == "sam_tiny" and args.device == "cuda:1"
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["index", "x.jpg", "-o", "a.idx", "--model", "vit_x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'vit_x'" in err and "vit_t" in err and "sam_tiny" not in err


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda1", "CPU"])
def test_malformed_device_is_a_usage_error(device, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["index", "x.jpg", "-o", "a.idx", "--device", device])
    assert info.value.code == 2
    assert "cuda:N" in capsys.readouterr().err


def test_absent_gpu_index_is_one_clear_error(monkeypatch) -> None:
    import torch

    from persam.backends.registry import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda:0")
