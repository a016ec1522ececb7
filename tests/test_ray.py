"""`persam index --ray` and `persam segment --index STORE --ray` on a local Ray runtime (127.0.0.1, 2 CPUs).

One runtime for the module (started ~3 s, shut down in teardown); every test has a time limit.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import require
from persam.cli.main import main
from raycheck import MIN_IOU, assert_close, mask_iou, masks, stored_rows

ray = require("ray")

MODEL = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
PHOTOS = 24


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def time_limit():
    """Fail a test that runs over 150 s instead of hanging the suite."""

    def expired(signum, frame):
        raise TimeoutError("Ray test ran over 150 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(150)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    root = tmp_path_factory.mktemp("album")
    ref, mask = synthetic_photo(seed=50)
    Image.fromarray(ref).save(root / "ref.jpg")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ref_mask.png")
    for i in range(PHOTOS):
        folder = root / "photos" / ("a" if i % 3 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_photo(72 + i % 5, 96, seed=100 + i)[0]).save(folder / f"p{i:02d}.png")
    (root / "photos" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    assert (
        main(
            [
                "personalize",
                "--ref",
                str(root / "ref.jpg"),
                "--ref-mask",
                str(root / "ref_mask.png"),
                "-o",
                str(root / "c.persam"),
                *MODEL,
            ]
        )
        == 0
    )
    return root


def good_photos(album: Path) -> list[str]:
    return sorted(str(p.resolve()) for p in (album / "photos").rglob("*.png"))


def test_ray_path_equals_local_path(album, ray_runtime, capsys):
    photos, concept = str(album / "photos"), str(album / "c.persam")
    local, remote = album / "store_local", album / "store_ray"
    assert main(["index", photos, "-o", str(local), "--dtype", "float32", *MODEL]) == 1  # the broken photo
    assert main(["index", photos, "-o", str(remote), "--dtype", "float32", "--ray", *MODEL]) == 1
    out = capsys.readouterr()
    assert f"{PHOTOS} encoded now, 0 unchanged, 1 skipped, 0 failed" in out.out
    assert "broken.jpg: " in out.err and "not a readable image" in out.err
    rows = stored_rows(remote)
    assert sorted(r["path"] for r in rows if r["status"] == "encoded") == good_photos(album)  # each photo once
    broken = [r for r in rows if r["status"] == "skipped"]
    assert (
        len(broken) == 1 and broken[0]["path"].endswith("broken.jpg") and "not a readable image" in broken[0]["reason"]
    )

    seg = ["--concept", concept, "--format", "coco", *MODEL]
    assert main(["segment", "--index", str(local), "-o", str(album / "out_local"), *seg]) == 0
    assert main(["segment", "--index", str(remote), "-o", str(album / "out_ray"), "--ray", *seg]) == 0
    a, b = masks(album / "out_local"), masks(album / "out_ray")
    assert len(a) == PHOTOS and a.keys() == b.keys()
    ious = {k: mask_iou(a[k] > 0, b[k] > 0) for k in a}
    assert min(ious.values()) >= MIN_IOU, ious
    assert all(a[k].any() for k in a)  # real masks, not two empty outputs
    manifest = json.loads((album / "out_ray" / "manifest.json").read_text())
    assert [e["input"] for e in manifest["inputs"]] == good_photos(album)  # input order, each once
    local_manifest = json.loads((album / "out_local" / "manifest.json").read_text())
    # the two runs read two stores: their specs differ in the index only, and so do their resume keys
    for m, store in ((manifest, remote), (local_manifest, local)):
        assert m["spec"].pop("index") == str(store)
        key = m.pop("spec_key")
        assert all(e.pop("spec_key") == key for e in m["inputs"])
    assert_close(manifest, local_manifest)
    ray_coco = json.loads((album / "out_ray" / "annotations.json").read_text())
    assert len(ray_coco["annotations"]) == PHOTOS
    assert_close(ray_coco, json.loads((album / "out_local" / "annotations.json").read_text()))


def test_rerun_skips_stored_photos(album, ray_runtime, capsys):
    store, photos = album / "store_resume", str(album / "photos")
    args = ["index", photos, "-o", str(store), "--ray", *MODEL]
    main(args)
    capsys.readouterr()
    changed = album / "photos" / "b" / "p00.png"
    Image.fromarray(synthetic_photo(72, 96, seed=999)[0]).save(changed)
    try:
        assert main(args) == 1
        assert f"1 encoded now, {PHOTOS - 1} unchanged, 1 skipped, 0 failed" in capsys.readouterr().out
        rows = [r for r in stored_rows(store) if r["path"] == str(changed.resolve())]
        assert len(rows) == 2 and len({r["sha256"] for r in rows}) == 2  # the old row stays; the newest counts
        seg = [
            "segment",
            "--index",
            str(store),
            "--concept",
            str(album / "c.persam"),
            "-o",
            str(album / "out_resume"),
            "--ray",
            *MODEL,
        ]
        assert main(seg) == 0
        capsys.readouterr()
        assert main(seg) == 0
        assert f"{PHOTOS} by an earlier run" in capsys.readouterr().out
    finally:
        Image.fromarray(synthetic_photo(72, 96, seed=100)[0]).save(changed)


def test_killed_worker_loses_and_duplicates_nothing(album, ray_runtime, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "killed"
    monkeypatch.setenv("PERSAM_TEST_KILL_WORKER_AT", f"6:{marker}")
    store = tmp_path / "store"
    assert main(["index", str(album / "photos"), "-o", str(store), "--ray", "--ray-batch-size", "4", *MODEL]) == 1
    assert marker.is_file()  # an encoder actor's process did die at its 6th photo
    assert f"{PHOTOS} encoded now, 0 unchanged, 1 skipped, 0 failed" in capsys.readouterr().out
    encoded = [r["path"] for r in stored_rows(store) if r["status"] == "encoded"]
    assert sorted(encoded) == good_photos(album)  # every photo once: nothing lost, nothing twice

    marker2 = tmp_path / "killed2"
    monkeypatch.setenv("PERSAM_TEST_KILL_WORKER_AT", f"6:{marker2}")
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                "--index",
                str(store),
                "--concept",
                str(album / "c.persam"),
                "-o",
                str(out),
                "--ray",
                "--ray-batch-size",
                "4",
                *MODEL,
            ]
        )
        == 0
    )
    assert marker2.is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and [e["input"] for e in manifest["inputs"]] == good_photos(album)
    assert len(masks(out)) == PHOTOS
