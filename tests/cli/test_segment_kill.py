"""Killing ``persam segment`` midway (SIGKILL, a real process) and running it again: every mask exactly once,
the manifest lists every photo, and nothing the first run finished is redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam
from conftest import synthetic_photo

SRC = str(Path(persam.__file__).resolve().parents[1])
N = 30


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
    cmd = [sys.executable, "-m", "persam", "segment", "--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png"),
           str(photos), "-o", str(out), "--model", "sam_tiny", "--random-weights", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, done = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None:
        manifest = read_manifest(out / "manifest.json")
        done = len(manifest["inputs"]) if manifest else 0
        if done >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    killed = read_manifest(out / "manifest.json")
    assert killed is not None, "the killed run left no readable manifest"
    if killed["complete"]:
        pytest.skip("the run finished before it could be killed")
    assert 3 <= len(killed["inputs"]) < N and not killed["complete"]
    finished = {e["mask"]: (out / e["mask"]).stat().st_mtime_ns for e in killed["inputs"]}

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = read_manifest(out / "manifest.json")
    assert manifest["complete"] and [e["status"] for e in manifest["inputs"]] == ["written"] * N
    assert [Path(e["input"]).name for e in manifest["inputs"]] == [f"p{i:02d}.png" for i in range(N)]
    # every mask once (a write cut by the kill may leave a hidden temporary file of persam.io.atomic: not a mask)
    masks = sorted(p.name for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    assert masks == [f"p{i:02d}.png" for i in range(N)]
    assert {m: (out / m).stat().st_mtime_ns for m in finished} == finished  # nothing finished was redone
    assert f"{len(finished)} by an earlier run" in rerun.stdout
