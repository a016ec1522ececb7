"""A ``persam segment`` killed (SIGKILL) inside an atomic write leaves a hidden temp file; the same command
again removes it (and only what ``persam.io.atomic`` names that way, in the folders it writes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import persam
from conftest import synthetic_photo
from persam.io.atomic import TEMP_NAME

SRC = str(Path(persam.__file__).resolve().parents[1])
#: ``persam segment`` in a process that SIGKILLs itself when the mask of trip/p1.png has its temp file written and
#: is about to be renamed into place: the moment a hard kill leaves a temp file behind.
KILL_DRIVER = """
import os, signal, sys
from persam.io import atomic
from persam.cli.main import main
real = atomic.PendingFile.commit
def killed(self):
    if self.target.name == "p1.png" and self.target.parent.name == "trip":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self)
atomic.PendingFile.commit = killed
sys.exit(main(sys.argv[1:]))
"""


def temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if TEMP_NAME.fullmatch(p.name))


def test_rerun_removes_the_temp_file_a_kill_left(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    for i, name in enumerate(["trip/p0.png", "trip/p1.png", "p2.png"]):
        Image.fromarray(synthetic_photo(seed=i)[0]).save(photos / name)
    ref, mask = synthetic_photo(seed=99)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    out = tmp_path / "out"
    args = [
        "segment",
        "--ref",
        str(tmp_path / "ref.png"),
        "--ref-mask",
        str(tmp_path / "ref_mask.png"),
        str(photos),
        "-o",
        str(out),
        "--model",
        "sam_tiny",
        "--random-weights",
        "--device",
        "cpu",
        "--workers",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": SRC}
    first = subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    left = temps(out)
    assert len(left) == 1 and left[0].parent == out / "trip", left  # trip/p1.png's mask
    foreign = out / "notes" / ".x.png.0123abcd.tmp"  # a folder this command does not write: not its business
    foreign.parent.mkdir()
    foreign.touch()

    rerun = subprocess.run(
        [sys.executable, "-m", "persam", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "removed 1 unfinished temporary file(s)" in rerun.stderr
    assert temps(out) == [foreign]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["p2.png", "trip/p0.png", "trip/p1.png"]
