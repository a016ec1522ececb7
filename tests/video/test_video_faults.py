"""Real faults of a real ``persam video`` process: a SIGINT (Ctrl-C), two of them, and a SIGKILL, each at a
known frame; then the same command again. The folder lock: a second run into a busy folder is refused in one
line, and a killed run leaves no lock behind."""

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
from persam.io import save_label_map as save_palette

SRC = str(Path(persam.__file__).resolve().parents[1])
N = 8
AT = 4  # the fault lands while this frame is segmented (SIGINT) or written (SIGKILL)
TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu", "--quiet"]
#: ``persam video`` in a process of its own; argv[1] the fault, argv[2] the frame it lands on. ``int``: SIGINT
#: while the frame is segmented. ``int2``: SIGINT, and once it is handled SIGINT again, while the frame is
#: segmented. ``kill``: SIGKILL just before the frame's label map is written. ``none``: no fault. The manifest is
#: written after every frame (``Pacer`` paces it by the clock, which would make the frames it vouches for after
#: a kill depend on the machine's speed). Prints the frames segmented ("steps ...").
DRIVER = """
import os, signal, sys
import persam.engine.interrupt as interrupt
import persam.jobs.video as jobs_video
from persam.session.video import VideoSession
from persam.cli.main import main
kind, at = sys.argv[1], int(sys.argv[2])
real_ctx, events = interrupt.stop_on_ctrl_c, []
def capture(stop, now=None):
    events.append(stop)
    return real_ctx(stop, now)
interrupt.stop_on_ctrl_c = capture
class EveryFrame(jobs_video.Pacer):
    def __call__(self, now=True):
        self.write()
jobs_video.Pacer = EveryFrame
real_step, real_save, steps = VideoSession.step, jobs_video.save_label_map, []
def step(self, frame):
    steps.append(self.index + 1)
    if self.index + 1 == at and kind in ("int", "int2"):
        os.kill(os.getpid(), signal.SIGINT)
        if kind == "int2":
            events[-1].wait(timeout=60)
            os.kill(os.getpid(), signal.SIGINT)
    return real_step(self, frame)
def save(path, labels):
    if kind == "kill" and path.name == f"{at:05d}.png":
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(path, labels)
VideoSession.step = step
jobs_video.save_label_map = save
code = main(sys.argv[3:])
print("steps", *steps)
sys.exit(code)
"""
#: holds the folder lock of argv[1] until killed
HOLD = """
import sys, time
from persam.io.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def video(kind: str, inputs: list[str], out: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", DRIVER, kind, str(AT), "video", *inputs, "-o", str(out), *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)


def steps(run: subprocess.CompletedProcess) -> list[int]:
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("steps")]
    return [int(s) for s in line.split()[1:]]


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
    """An uninterrupted run of the same command."""
    out = tmp_path_factory.mktemp("whole") / "out"
    run = video("none", inputs, out)
    assert run.returncode == 0, run.stderr
    assert steps(run) == list(range(1, N))
    assert manifest(out)["complete"] and manifest(out)["frames"] == N
    return out


def check_stopped(out: Path, whole: Path, frames: int) -> None:
    """The manifest says exactly ``frames`` finished, and they are the label maps there, nothing else."""
    assert manifest(out) == {
        "command": "video",
        "settings": manifest(whole)["settings"],
        "frames": frames,
        "complete": False,
    }
    assert sorted(pngs(out)) == [f"{i:05d}.png" for i in range(frames)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".persam.lock"]


def check_resumed(inputs: list[str], out: Path, whole: Path, frames: int) -> None:
    """The same command again segments only the frames after ``frames`` and ends as the uninterrupted run."""
    kept = {name: (out / name).stat().st_mtime_ns for name in pngs(out)}
    rerun = video("none", inputs, out)
    assert rerun.returncode == 0, rerun.stderr
    assert steps(rerun) == list(range(frames, N))  # only the missing frames
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # the finished ones untouched
    ours, expect = pngs(out), pngs(whole)
    assert sorted(ours) == sorted(expect) == [f"{i:05d}.png" for i in range(N)]
    for name in expect:
        np.testing.assert_array_equal(ours[name], expect[name], err_msg=name)
    assert manifest(out) == manifest(whole)


def test_ctrl_c_finishes_the_frame_and_the_rerun_resumes(tmp_path, inputs, whole):
    out = tmp_path / "out"
    run = video("int", inputs, out)
    assert run.returncode == 130, run.stderr
    assert run.stderr.strip() == "persam: interrupted"
    assert steps(run) == list(range(1, AT + 1))  # the frame in flight was finished, no other started
    check_stopped(out, whole, AT + 1)
    check_resumed(inputs, out, whole, AT + 1)


def test_a_second_ctrl_c_stops_inside_the_frame(tmp_path, inputs, whole):
    out = tmp_path / "out"
    run = video("int2", inputs, out)
    assert run.returncode == 130, run.stderr
    assert run.stderr.strip() == "persam: interrupted"
    assert steps(run) == list(range(1, AT + 1))
    check_stopped(out, whole, AT)  # the frame in flight was not finished
    check_resumed(inputs, out, whole, AT)


def test_kill_9_then_the_rerun_resumes_and_no_lock_is_left(tmp_path, inputs, whole):
    out = tmp_path / "out"
    run = video("kill", inputs, out)
    assert run.returncode == -signal.SIGKILL, run.stderr
    check_stopped(out, whole, AT)  # the manifest vouches only for the frames written before it
    check_resumed(inputs, out, whole, AT)  # and the killed run's lock did not keep the re-run out


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, inputs, whole):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "held"
        run = video("none", inputs, out)
        assert run.returncode == 2, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("persam: error:") and "another persam run" in line, line
        assert str(out) in line and str(holder.pid) in line
        assert "steps" not in run.stdout or steps(run) == []
        assert sorted(p.name for p in out.iterdir()) == [".persam.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait(timeout=60)
    run = video("none", inputs, out)
    assert run.returncode == 0, run.stderr
    assert manifest(out) == manifest(whole)
