"""Ctrl-C of a real ``persam segment`` process (a real SIGINT at a known point): with ``--workers 2`` the two
photos in flight finish and are recorded, none other starts; a second Ctrl-C writes nothing more. Either
way the manifest lists exactly the masks written, and the same command again completes the rest, equal
to an uninterrupted run."""

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
from conftest import synthetic_photo

SRC = str(Path(persam.__file__).resolve().parents[1])
N = 6
TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
#: ``persam segment`` in a process of its own. ``two-workers``: the first two photos wait for each other,
#: then the second sends SIGINT and both wait until it is handled, so exactly two photos are in flight when
#: Ctrl-C lands, with the next three photos already queued (the pool must not start them); the photo after p0
#: is computed only once p0 is recorded, so it is still in flight when the run stops (the run must wait for
#: it). ``twice``: the third photo sends SIGINT, waits until it is handled, sends it again until the second
#: Ctrl-C is handled, then is computed to its end. ``two-workers-twice``: as ``two-workers``, and the photo
#: after p0 sends the second Ctrl-C while the run waits for it. ``none``: no signal.
DRIVER = """
import os, signal, sys, threading, time
import numpy as np
import persam.engine.local as local
import persam.jobs.outputs as outputs
import persam.session.dispatch as dispatch
from persam.cli.main import main
from persam.io import load_image
kind, p0 = sys.argv[1], load_image(os.environ["PHOTO0"])
def ctrl_c_until(handled):
    # a real SIGINT to the main thread, as a terminal's Ctrl-C. Python 3.11 runs the handler of a signal that
    # lands just as the main thread blocks on a lock only once that thread wakes: let it block first, and send
    # again if the signal was not handled (a pending one and its repeat make one Ctrl-C: one handler call)
    time.sleep(0.5)
    for _ in range(12):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        if handled.wait(timeout=5):
            return
real_add, added = outputs.Outputs.add, threading.Event()
def add(self, done):
    real_add(self, done)
    added.set()
outputs.Outputs.add = add
real_submit, queued = local._Pool.submit, threading.Semaphore(0)
def submit(self, *args, **kwargs):
    future = real_submit(self, *args, **kwargs)
    queued.release()
    return future
local._Pool.submit = submit
real_ctx, events = local.stop_on_ctrl_c, []
def capture(stop, now=None):
    events.append((stop, now))
    return real_ctx(stop, now)
local.stop_on_ctrl_c = capture
real, calls, lock, both = dispatch.segment_photo, [], threading.Lock(), threading.Barrier(2)
def faulted(*args):
    with lock:
        calls.append(1)
        n = len(calls)
    if kind.startswith("two-workers") and n <= 2:
        both.wait(timeout=60)
        if n == 2:
            for _ in range(5):  # p0, p1 and three queued behind them
                queued.acquire(timeout=60)
            ctrl_c_until(events[-1][0])
        events[-1][0].wait(timeout=60)
        if not np.array_equal(args[1], p0):
            added.wait(timeout=60)
            if kind == "two-workers-twice":  # the run waits for this photo: Ctrl-C again meanwhile
                ctrl_c_until(events[-1][1])
    if kind == "twice" and n == 3:
        ctrl_c_until(events[-1][0])
        ctrl_c_until(events[-1][1])
    return real(*args)
dispatch.segment_photo = faulted
code = main(sys.argv[2:])
print("calls", len(calls))
sys.exit(code)
"""


@pytest.fixture
def batch(tmp_path: Path) -> list[str]:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(N):
        Image.fromarray(synthetic_photo(120, 160, seed=i)[0]).save(photos / f"p{i}.png")
    ref, mask = synthetic_photo(120, 160, seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    return ["--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png"), str(photos), *TINY]


def segment(kind: str, args: list[str], out: Path, workers: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "PHOTO0": str(Path(args[4]) / "p0.png")}
    cmd = [sys.executable, "-c", DRIVER, kind, "segment", *args, "-o", str(out), "--workers", str(workers)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("p*.png"))}


def entries(out: Path) -> list[dict]:
    """The manifest's entries without what differs between runs (none of it decides the masks)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return [{k: v for k, v in e.items() if k not in ("seconds",)} for e in manifest["inputs"]]


def check_interrupted(run: subprocess.CompletedProcess, out: Path, written: list[str], calls: int) -> None:
    """Exit 130, no traceback, the manifest incomplete and listing exactly ``written``, each mask complete."""
    assert run.returncode == 130, run.stderr
    assert "persam: interrupted" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert f"calls {calls}" in run.stdout, run.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert [(Path(e["input"]).name, e["status"], e["mask"]) for e in manifest["inputs"]] == [
        (f"{name}", "written", name) for name in written
    ]
    assert sorted(masks(out)) == written  # every mask listed is there (a complete PNG), none other
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".persam.lock"]


def check_completed(rerun: subprocess.CompletedProcess, out: Path, whole: Path, reused: int) -> None:
    """The same command again: only the rest is segmented; the result equals an uninterrupted run's."""
    assert rerun.returncode == 0, rerun.stderr
    assert f"calls {N - reused}" in rerun.stdout and f"{reused} by an earlier run" in rerun.stdout, rerun.stdout
    ours, expect = masks(out), masks(whole)
    assert sorted(ours) == sorted(expect) == [f"p{i}.png" for i in range(N)]
    for name in expect:
        np.testing.assert_array_equal(ours[name], expect[name], err_msg=name)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert [(e["input"], e["mask"], e["status"]) for e in entries(out)] == [
        (e["input"], e["mask"], e["status"]) for e in entries(whole)
    ]


def test_ctrl_c_with_two_workers_finishes_the_photos_in_flight(tmp_path, batch):
    whole = tmp_path / "whole"
    assert segment("none", batch, whole, workers=2).returncode == 0
    out = tmp_path / "out"
    run = segment("two-workers", batch, out, workers=2)
    check_interrupted(run, out, ["p0.png", "p1.png"], calls=2)
    check_completed(segment("none", batch, out, workers=2), out, whole, reused=2)


def test_a_second_ctrl_c_writes_nothing_more(tmp_path, batch):
    whole = tmp_path / "whole"
    assert segment("none", batch, whole, workers=1).returncode == 0
    out = tmp_path / "out"
    run = segment("twice", batch, out, workers=1)
    # the third photo was being computed: it is not written, and neither is any other
    check_interrupted(run, out, ["p0.png", "p1.png"], calls=3)
    check_completed(segment("none", batch, out, workers=1), out, whole, reused=2)


def test_a_second_ctrl_c_while_the_run_waits_for_a_worker(tmp_path, batch):
    """The second Ctrl-C lands while the run waits for a photo in flight: that photo is not written and the
    process still ends with 130 (an interrupted thread join once let it exit with a worker inside torch:
    "terminate called without an active exception", status 134)."""
    whole = tmp_path / "whole"
    assert segment("none", batch, whole, workers=2).returncode == 0
    out = tmp_path / "out"
    run = segment("two-workers-twice", batch, out, workers=2)
    check_interrupted(run, out, ["p0.png"], calls=2)
    check_completed(segment("none", batch, out, workers=2), out, whole, reused=1)
