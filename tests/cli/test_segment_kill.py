"""Killing ``persam segment`` midway (SIGKILL, a real process) and running it again: every mask exactly once,
the manifest lists every photo, and nothing the first run finished is redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam
from conftest import synthetic_photo

SRC = str(Path(persam.__file__).resolve().parents[1])
N = 30
KILLED_AT = 12
#: ``persam segment`` in a process that SIGKILLs itself while its 12th photo is segmented: the kill lands in
#: the middle of the batch on any machine, however fast (a kill from outside could come after the last photo).
KILL_DRIVER = f"""
import os, signal, sys
import persam.session.dispatch as dispatch
from persam.cli.main import main
real, calls = dispatch.segment_photo, []
def killed(*args):
    calls.append(1)
    if len(calls) == {KILLED_AT}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
dispatch.segment_photo = killed
sys.exit(main(sys.argv[1:]))
"""


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_killed_segment_resumes(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(N):
        Image.fromarray(synthetic_photo(480, 640, seed=i)[0]).save(photos / f"p{i:02d}.png")
    ref, mask = synthetic_photo(480, 640, seed=99)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "persam",
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
    ]
    env = {**os.environ, "PYTHONPATH": SRC}
    first = subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, *cmd[3:]], capture_output=True, text=True, env=env, timeout=300
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    killed = read_manifest(out / "manifest.json")
    assert killed is not None, "the killed run left no readable manifest"
    assert not killed["complete"] and 1 <= len(killed["inputs"]) < KILLED_AT, len(killed["inputs"])
    finished = {e["mask"]: (out / e["mask"]).stat().st_mtime_ns for e in killed["inputs"]}

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = read_manifest(out / "manifest.json")
    assert manifest["complete"] and [e["status"] for e in manifest["inputs"]] == ["written"] * N
    assert [Path(e["input"]).name for e in manifest["inputs"]] == [f"p{i:02d}.png" for i in range(N)]
    # every mask once (a write cut by the kill may leave a hidden temporary file of persam.io.atomic: not a mask)
    masks = sorted(
        p.name for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    )
    assert masks == [f"p{i:02d}.png" for i in range(N)]
    assert {m: (out / m).stat().st_mtime_ns for m in finished} == finished  # nothing finished was redone
    assert f"{len(finished)} by an earlier run" in rerun.stdout
