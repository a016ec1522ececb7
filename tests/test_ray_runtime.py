"""``persam index --ray`` and ``persam segment --ray`` with no cluster given start their own local Ray runtime
and stop it: the commands run as subprocesses (this test starts no Ray), and afterwards no process of their
runtimes is left (the Ray workers that read and wrote the photos, their raylet, and every process that
inherited the run's environment: gcs_server, agents); the masks equal a local run's. Ray's temporary folder
holds the record of a cluster ``ray start`` left behind: ``--ray`` alone neither joins nor waits on it.

Which processes were the runtime's: the hooks of ``tests/rayhooks`` log the pid and parent pid (the raylet)
of every process that read a photo or wrote a mask, and the subprocess's environment carries a token of this
test that every process of its runtime inherits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam
from conftest import synthetic_photo
from extras import require
from persam.cli.main import main
from raycheck import MIN_IOU, mask_iou, masks, stored_rows

require("ray")
psutil = require("psutil")

SRC = str(Path(persam.__file__).resolve().parents[1])
HOOKS = str(Path(__file__).resolve().parent / "rayhooks")
MODEL = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
N = 6
TOKEN = "PERSAM_TEST_RAY_RUNTIME"  # the environment variable that marks the processes of one command's runtime


def runtime_processes(token: str) -> list[str]:
    """The live processes whose environment holds ``token`` (a zombie is dead: its parent has not reaped it)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(TOKEN) == token:
                found.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:150]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def left_behind(pids: set[int], token: str) -> list[str]:
    """What of the runtime is still running; waits up to 60 s for processes already told to stop."""
    deadline = time.monotonic() + 60
    while True:
        left = [f"{pid} (logged)" for pid in sorted(pids) if alive(pid)] + runtime_processes(token)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def run_command(
    args: list[str], hooks: Path, log: Path, token: str, temp: str
) -> tuple[subprocess.CompletedProcess, set]:
    """``persam ARGS`` in a subprocess with the hooks on and Ray's temporary folder ``temp``; (its result, the
    pids and parent pids it logged)."""
    hooks.write_text(json.dumps({"log": str(log)}))
    env = {**os.environ, "PYTHONPATH": f"{HOOKS}{os.pathsep}{SRC}", "PERSAM_TEST_HOOKS": str(hooks), TOKEN: token}
    env["RAY_TMPDIR"] = temp
    env.pop("RAY_ADDRESS", None)  # a cluster named here would be joined, not started
    proc = subprocess.Popen(
        [sys.executable, "-m", "persam", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # over time: stop it and what it started, and fail below
            proc.kill()
            out, err = proc.communicate()
            for line in runtime_processes(token):
                psutil.Process(int(line.split(":")[0])).kill()
    lines = [line.split("\t") for line in log.read_text().splitlines()] if log.is_file() else []
    pids = {int(x) for line in lines for x in line[1:3]}
    assert proc.pid not in pids, "a photo was read or written by the command's own process, not by a Ray worker"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), pids


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own_runtime")
    ref, mask = synthetic_photo(seed=50)
    Image.fromarray(ref).save(root / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ref_mask.png")
    (root / "photos").mkdir()
    for i in range(N):
        Image.fromarray(synthetic_photo(72, 96, seed=300 + i)[0]).save(root / "photos" / f"p{i}.png")
    concept = ["--ref", str(root / "ref.png"), "--ref-mask", str(root / "ref_mask.png")]
    assert main(["personalize", *concept, "-o", str(root / "c.persam"), *MODEL]) == 0
    return root


def test_commands_start_and_stop_their_own_runtime(album, tmp_path):
    photos, concept = str(album / "photos"), str(album / "c.persam")
    names = [str((album / "photos" / f"p{i}.png").resolve()) for i in range(N)]
    local = tmp_path / "local"
    assert main(["index", photos, "-o", str(local / "store"), "--dtype", "float32", *MODEL]) == 0
    assert (
        main(["segment", "--index", str(local / "store"), "--concept", concept, "-o", str(local / "out"), *MODEL]) == 0
    )

    token = uuid.uuid4().hex
    # Ray's temporary folder as ``ray start`` leaves it when its cluster is gone: a record of a dead cluster,
    # which a plain ray.init() would join and wait on (a short path: Ray's sockets live under it)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    (Path(temp) / "ray").mkdir()
    (Path(temp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    try:
        check_commands(album, tmp_path, names, token, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def check_commands(album: Path, tmp_path: Path, names: list[str], token: str, temp: str) -> None:
    photos, concept = str(album / "photos"), str(album / "c.persam")
    store, out = tmp_path / "store", tmp_path / "out"
    index, pids = run_command(
        ["index", photos, "-o", str(store), "--dtype", "float32", "--ray", *MODEL],
        tmp_path / "hooks.json",
        tmp_path / "index.log",
        token,
        temp,
    )
    assert index.returncode == 0, index.stderr
    assert f"{N} encoded now, 0 unchanged, 0 skipped, 0 failed" in index.stdout
    assert sorted(r["path"] for r in stored_rows(store)) == names  # each photo stored once
    reads = [line.split("\t")[3] for line in (tmp_path / "index.log").read_text().splitlines()]
    assert sorted(reads) == names  # read on Ray workers (logged), each once
    assert left_behind(pids, token) == []

    segment, pids = run_command(
        ["segment", "--index", str(store), "--concept", concept, "-o", str(out), "--ray", *MODEL],
        tmp_path / "hooks.json",
        tmp_path / "segment.log",
        token,
        temp,
    )
    assert segment.returncode == 0, segment.stderr
    assert "on Ray with 1 worker(s)" in segment.stdout
    writes = [line.split("\t")[3] for line in (tmp_path / "segment.log").read_text().splitlines()]
    assert sorted(writes) == names  # each mask written once, on a Ray worker
    assert left_behind(pids, token) == []

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and [e["input"] for e in manifest["inputs"]] == names
    assert [e["status"] for e in manifest["inputs"]] == ["written"] * N
    a, b = masks(tmp_path / "local" / "out"), masks(out)
    assert sorted(b) == [f"p{i}.png" for i in range(N)] and a.keys() == b.keys()
    assert all(a[k].any() for k in a)  # real masks, not two empty outputs
    assert min(mask_iou(a[k] > 0, b[k] > 0) for k in a) >= MIN_IOU


def test_a_runtime_started_for_a_run_is_stopped_when_the_run_ends_in_its_process():
    """``connect(None)`` in a process that holds no runtime (the Python API, the app): the runtime it starts is
    shut down when the run ends, not left for the interpreter's exit (Ray's own exit hook would stop it only
    then, so the subprocess test above cannot see the difference). In a fresh interpreter of its own."""
    code = (
        "import ray\n"
        "from persam.jobs.ray_common import connect\n"
        "assert not ray.is_initialized()\n"
        "with connect(None):\n"
        "    inside = ray.is_initialized()\n"
        "print(inside, ray.is_initialized())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["True", "False"], done.stdout
