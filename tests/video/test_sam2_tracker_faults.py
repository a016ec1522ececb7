"""Ctrl-C and the folder lock of a real ``persam video --tracker sam2`` process: the first Ctrl-C finishes the
frame being tracked and leaves a manifest that counts exactly the frames written (``"complete": false``);
the tracker does not resume, so the same command again tracks from frame 0 and ends as an uninterrupted run.
A second run into a busy folder is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam
from extras import require
from persam.io import save_label_map as save_palette

require("sam2")

SRC = str(Path(persam.__file__).resolve().parents[1])
N = 6
AT = 2  # Ctrl-C lands while this frame's label map is being written
SAM2_TINY = ["--tracker", "sam2", "--model", "sam2_tiny", "--random-weights", "--device", "cpu", "--quiet"]
#: ``persam video`` in a process of its own; argv[1] ``int``: SIGINT to itself as frame AT is written (the frame
#: is in flight: tracked, not yet written), ``none``: no fault. Prints the label maps written ("saved ...").
DRIVER = """
import os, signal, sys
import persam.jobs.tracking as tracking
from persam.cli.main import main
kind, at = sys.argv[1], int(sys.argv[2])
real_save, saved = tracking.save_label_map, []
def save(path, labels):
    if kind == "int" and path.name == f"{at:05d}.png":
        os.kill(os.getpid(), signal.SIGINT)
    real_save(path, labels)
    saved.append(path.name)
tracking.save_label_map = save
code = main(sys.argv[3:])
print("saved", *saved)
sys.exit(code)
"""
HOLD = """
import sys, time
from persam.io.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def track(kind: str, inputs: list[str], out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", DRIVER, kind, str(AT), "video", *inputs, "-o", str(out), *SAM2_TINY]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, clip_factory) -> list[str]:
    root = tmp_path_factory.mktemp("clip")
    clip = clip_factory(n_frames=N)
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    save_palette(root / "first.png", clip.labels[0])
    return [str(folder), "--mask", str(root / "first.png")]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, inputs) -> Path:
    out = tmp_path_factory.mktemp("whole") / "out"
    run = track("none", inputs, out)
    assert run.returncode == 0, run.stderr
    assert manifest(out)["complete"] is True and manifest(out)["frames"] == N
    return out


def test_ctrl_c_finishes_the_frame_and_records_what_was_written(tmp_path, inputs, whole):
    out = tmp_path / "out"
    run = track("int", inputs, out)
    assert run.returncode == 130, run.stderr
    assert run.stderr.strip() == "persam: interrupted"
    written = [f"{i:05d}.png" for i in range(AT + 1)]  # the frame in flight was finished, no other started
    assert run.stdout.split() == ["saved", *written]
    assert sorted(pngs(out)) == written
    stopped, complete = manifest(out), manifest(whole)
    assert stopped["frames"] == AT + 1 and stopped["complete"] is False
    for key in ("input", "model", "checkpoint_sha256", "tracker", "lost_after"):
        assert stopped[key] == complete[key], key
    assert [o["id"] for o in stopped["objects"]] == [o["id"] for o in complete["objects"]]
    for name in written:  # what was written is what the uninterrupted run wrote
        np.testing.assert_array_equal(pngs(out)[name], pngs(whole)[name], err_msg=name)

    rerun = track("none", inputs, out)  # no resume for the tracker: from frame 0, to the same end
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(pngs(out)) == sorted(pngs(whole)) == [f"{i:05d}.png" for i in range(N)]
    for name, expect in pngs(whole).items():
        np.testing.assert_array_equal(pngs(out)[name], expect, err_msg=name)
    assert manifest(out) == manifest(whole)


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, inputs, whole):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "held"
        run = track("none", inputs, out)
        assert run.returncode == 2, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("persam: error:") and "another persam run" in line, line
        assert str(out) in line and str(holder.pid) in line
        assert sorted(p.name for p in out.iterdir()) == [".persam.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait(timeout=60)
    run = track("none", inputs, out)
    assert run.returncode == 0, run.stderr
    assert manifest(out) == manifest(whole)
