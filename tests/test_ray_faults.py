"""Ray with two actors and with faults: order across actors, a read task whose worker dies, a part file cut
short, an actor killed in the middle of a batch. Every run is compared with a local run of the same photos.

One local runtime for the module (3 logical CPUs: two 1-CPU actors and a CPU for the read tasks), started with
``tests/rayhooks`` on its workers' PYTHONPATH: the hooks log which worker process read each photo and wrote
each mask (so a test sees that two actors worked, and how many times each mask was written), and make one
read task's process kill itself. Every test has a time limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam
from conftest import synthetic_photo
from extras import require
from persam.cli.main import main
from persam.io.atomic import TEMP_NAME
from raycheck import MIN_IOU, assert_close, mask_iou, masks, ray_data_console_here, stored_rows

ray = require("ray")
pq = require("pyarrow.parquet")

SRC = str(Path(persam.__file__).resolve().parents[1])
HOOKS = str(Path(__file__).resolve().parent / "rayhooks")
MODEL = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
N = 16
POOL = ["--ray-workers", "2", "--ray-batch-size", "4"]
RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING) ")  # Ray Data's progress log


@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    """The hooks' settings file (rewritten by each test) of a runtime started here with the hooks on."""
    config = tmp_path_factory.mktemp("hooks") / "hooks.json"
    config.write_text("{}")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PERSAM_TEST_HOOKS")}
    os.environ["PYTHONPATH"] = f"{HOOKS}{os.pathsep}{SRC}"  # inherited by the raylet, so by every worker
    os.environ["PERSAM_TEST_HOOKS"] = str(config)
    try:
        ray.init(
            num_cpus=3,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        ray_data_console_here()  # the session's stderr, not a closed capsys stream of an earlier module's test
        yield config
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def time_limit():
    """Fail a test that runs over 240 s instead of hanging the suite."""

    def expired(signum, frame):
        raise TimeoutError("Ray test ran over 240 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(240)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def set_hooks(config: Path, log: Path, **more) -> Path:
    config.write_text(json.dumps({"log": str(log), **more}))
    return log


def logged(log: Path, kind: str) -> list[tuple[int, str]]:
    """(pid, photo) of each logged call of ``kind`` ("read" or "write"), in the order they were made."""
    lines = [line.split("\t") for line in log.read_text().splitlines()] if log.is_file() else []
    return [(int(pid), path) for k, pid, _, path in lines if k == kind]


@pytest.fixture(scope="module")
def album(tmp_path_factory, hooks) -> Path:
    """Photos in two folders, a concept, a store indexed on Ray and a local run over a local store."""
    root = tmp_path_factory.mktemp("ray_faults")
    ref, mask = synthetic_photo(seed=50)
    Image.fromarray(ref).save(root / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ref_mask.png")
    for i in range(N):
        folder = root / "photos" / ("a" if i % 3 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_photo(72 + i % 5, 96, seed=400 + i)[0]).save(folder / f"p{i:02d}.png")
    concept = ["--ref", str(root / "ref.png"), "--ref-mask", str(root / "ref_mask.png")]
    assert main(["personalize", *concept, "-o", str(root / "c.persam"), *MODEL]) == 0
    assert index(root, root / "store_local") == 0
    assert segment(root, root / "store_local", root / "out_local") == 0
    assert index(root, root / "store", "--ray", *POOL) == 0
    return root


def index(album: Path, store: Path, *extra: str) -> int:
    return main(["index", str(album / "photos"), "-o", str(store), "--dtype", "float32", *extra, *MODEL])


def segment(album: Path, store: Path, out: Path, *extra: str) -> int:
    args = ["--index", str(store), "--concept", str(album / "c.persam"), "-o", str(out), "--format", "coco"]
    return main(["segment", *args, *extra, *MODEL])


def photos(album: Path) -> list[str]:
    return sorted(str(p.resolve()) for p in (album / "photos").rglob("*.png"))


def assert_like_local(
    album: Path, out: Path, store: Path, names: list[str] | None = None, left: frozenset[str] = frozenset()
) -> list[dict]:
    """``out`` holds the local run's masks (within the tolerance) for ``names`` (default: every photo), and
    its manifest lists them in input order, each once, with the local run's entries; returns the entries.
    ``left``: mask files that may be there besides (written by a try that was then killed, not listed)."""
    names = photos(album) if names is None else names
    local_manifest = json.loads((album / "out_local" / "manifest.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    entries = [e for e in manifest["inputs"] if e["status"] == "written"]
    assert [e["input"] for e in entries] == names  # input order across actors, each photo once
    local = {e["input"]: e for e in local_manifest["inputs"]}
    for m in (manifest, local_manifest):
        key = m.pop("spec_key")
        assert all(e["spec_key"] == key for e in m["inputs"] if e["status"] == "written")
    for e in entries:
        assert_close({**e, "spec_key": ""}, {**local[e["input"]], "spec_key": ""}, e["input"])
    a, b = masks(album / "out_local"), masks(out)
    wanted = {e["mask"] for e in entries}
    assert sorted(set(b) - left) == sorted(wanted)  # every mask once, no other file (a stray copy, a temporary file)
    assert not [p for p in out.rglob("*") if TEMP_NAME.fullmatch(p.name)]  # no temporary file of a write left
    assert all(a[k].any() for k in wanted) and min(mask_iou(a[k] > 0, b[k] > 0) for k in wanted) >= MIN_IOU
    return manifest["inputs"]


def test_two_actors_write_what_a_local_run_writes(album, hooks, tmp_path, capsys):
    assert sorted(r["path"] for r in stored_rows(album / "store")) == photos(album)  # indexed on 2 actors, once
    # the first actor to write waits (up to 120 s) until the second has written: its queue holds at most 4
    # of the 8 batches, so the other actor gets the rest, however fast the first one starts
    log = set_hooks(hooks, tmp_path / "log", barrier=2)
    out = tmp_path / "out"
    assert segment(album, album / "store", out, "--ray", "--ray-workers", "2", "--ray-batch-size", "2") == 0
    assert "on Ray with 2 worker(s)" in capsys.readouterr().out
    writes = logged(log, "write")
    assert sorted(p for _, p in writes) == photos(album)  # each mask written once
    assert len({pid for pid, _ in writes}) == 2  # by two actors
    assert_like_local(album, out, album / "store")
    assert_close(
        json.loads((out / "annotations.json").read_text()),
        json.loads((album / "out_local" / "annotations.json").read_text()),
    )


def test_a_read_task_whose_worker_dies_is_retried(album, hooks, tmp_path, capsys):
    victim = photos(album)[5]
    marker = tmp_path / "died"
    log = set_hooks(hooks, tmp_path / "log", fail_read={"name": victim, "marker": str(marker)})
    store = tmp_path / "store"
    assert index(album, store, "--ray", *POOL) == 0
    assert f"{N} encoded now, 0 unchanged, 0 skipped, 0 failed" in capsys.readouterr().out
    died = int(marker.read_text())  # the read task's process did kill itself at the photo, once
    reads = logged(log, "read")
    assert (died, victim) in reads and [pid for pid, p in reads if p == victim][-1] != died  # read again
    rows = stored_rows(store)
    assert sorted(r["path"] for r in rows) == photos(album) and {r["status"] for r in rows} == {"encoded"}
    set_hooks(hooks, tmp_path / "log2")
    assert segment(album, store, tmp_path / "out", "--ray", *POOL) == 0
    assert sorted(p for _, p in logged(tmp_path / "log2", "write")) == photos(album)
    assert_like_local(album, tmp_path / "out", store)


def test_a_part_file_cut_short_through_ray(album, hooks, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(album / "store", store)
    parts = {p: pq.read_table(p, columns=["path"])["path"].to_pylist() for p in sorted(store.glob("*.parquet"))}
    assert len(parts) > 1, parts  # a Ray part file holds a block of photos; cut one of several
    part, lost = next((p, names) for p, names in parts.items() if len(names) > 1)
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    set_hooks(hooks, tmp_path / "log")
    capsys.readouterr()
    out = tmp_path / "out"
    assert segment(album, store, out, "--ray", *POOL) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if not RAY_LOG.match(line)]
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    assert len(lines) == 1 and str(part) in lines[0] and "damaged part file" in lines[0], captured.err
    kept = [p for p in photos(album) if p not in lost]
    entries = assert_like_local(album, out, store, kept)
    skipped = [e for e in entries if e["status"] != "written"]
    assert len(skipped) == 1 and skipped[0]["status"] == "skipped" and str(part) in skipped[0]["reason"]
    assert sorted(p for _, p in logged(tmp_path / "log", "write")) == kept


def test_an_actor_killed_mid_batch_writes_every_mask_once(album, hooks, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "killed"
    monkeypatch.setenv("PERSAM_TEST_KILL_WORKER_AT", f"6:{marker}")  # an actor SIGKILLs itself at its 6th photo
    log = set_hooks(hooks, tmp_path / "log")
    out = tmp_path / "out"
    assert segment(album, album / "store", out, "--ray", *POOL) == 0
    killed = int(marker.read_text())
    writes = logged(log, "write")
    by_killed = [p for pid, p in writes if pid == killed]
    assert len(by_killed) == 5  # it wrote 5 masks: one batch of 4, and 1 of the batch it died in
    redone = [p for p in by_killed if [q for _, q in writes].count(p) > 1]
    # the batch it died in was retried on another actor process: its one finished photo written again
    assert len(redone) == 1 and by_killed[-1] == redone[0]
    assert all(pid != killed for pid, p in writes[writes.index((killed, redone[0])) + 1 :])
    assert sorted(set(p for _, p in writes)) == photos(album)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and [e["status"] for e in manifest["inputs"]] == ["written"] * N
    assert_like_local(album, out, album / "store")


def test_a_photo_that_kills_every_worker_ends_the_run_with_the_others_written(album, hooks, tmp_path, capsys):
    """Without a bound on retries Ray Data retried such a batch on a restarted actor without end: the run
    hung (the test's time limit). Now its batch is tried ``BATCH_TRIES`` times, dropped, its photos named
    "not run", and every other photo written, each once, equal to the local run."""
    from persam.jobs.ray_common import BATCH_TRIES

    doomed = photos(album)[6]
    log = set_hooks(hooks, tmp_path / "log", kill_write=doomed)
    out = tmp_path / "out"
    capsys.readouterr()
    assert segment(album, album / "store", out, "--ray", *POOL) == 1
    captured = capsys.readouterr()
    kills = [pid for pid, p in logged(log, "kill")]
    assert len(kills) == BATCH_TRIES and len(set(kills)) == BATCH_TRIES  # three actor processes, one try each
    manifest = json.loads((out / "manifest.json").read_text())
    written = [e["input"] for e in manifest["inputs"] if e["status"] == "written"]
    lost = [p for p in photos(album) if p not in written]
    assert doomed in lost and 1 <= len(lost) <= 4  # its batch (of 4 at most) is dropped, nothing else
    assert not manifest["complete"] and len(manifest["inputs"]) == N - len(lost)
    lines = [line for line in captured.err.splitlines() if line.startswith("persam: not run ")]
    assert sorted(line.split()[3].rstrip(":") for line in lines) == sorted(lost), captured.err
    assert all(f"failed {BATCH_TRIES} times" in line for line in lines)
    assert f"{len(lost)} not run" in captured.out
    writes = [p for _, p in logged(log, "write")]
    assert sorted(set(writes) - set(lost)) == sorted(written)
    assert all(writes.count(p) == 1 for p in written)  # the other batches were not retried
    # masks a killed try wrote before the doomed photo are left, unlisted (a re-run redoes those photos)
    left = frozenset(Path(p).relative_to((album / "photos").resolve()).as_posix() for p in set(writes) & set(lost))
    assert_like_local(album, out, album / "store", written, left)


def test_a_photo_that_kills_every_reader_is_counted_failed_and_the_others_stored(album, hooks, tmp_path, capsys):
    """``persam index --ray``: the read task of a photo that kills its worker every time is tried
    ``BATCH_TRIES`` times, then its batch is dropped and named in one line per photo; the others are stored."""
    from persam.jobs.ray_common import BATCH_TRIES

    doomed = photos(album)[9]
    log = set_hooks(hooks, tmp_path / "log", fail_read={"name": doomed, "always": True})
    store = tmp_path / "store"
    capsys.readouterr()
    assert index(album, store, "--ray", *POOL) == 1
    captured = capsys.readouterr()
    kills = [pid for pid, p in logged(log, "kill")]
    assert len(kills) == BATCH_TRIES and len(set(kills)) == BATCH_TRIES
    stored = sorted(r["path"] for r in stored_rows(store))
    lost = [p for p in photos(album) if p not in stored]
    assert doomed in lost and 1 <= len(lost) <= 4 and len(set(stored)) == len(stored)
    lines = [line for line in captured.err.splitlines() if line.startswith("persam: failed ")]
    assert sorted(line.split()[2].rstrip(":") for line in lines) == lost, captured.err
    assert f"{N - len(lost)} encoded now, 0 unchanged, 0 skipped, {len(lost)} failed" in captured.out
