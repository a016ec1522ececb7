"""Batch safety of ``persam segment``: checks before the model, unique output names, outputs never read as
inputs, the summary line, resuming, a stale or foreign index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import persam.session.photo
from conftest import synthetic_photo
from persam.cli.main import main
from persam.jobs.outputs import output_stems

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


def save_photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_photo(120, 160, seed=seed)[0]).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr(persam.session.photo, "load", load)


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persam: error: "), lines
    return lines[0]


# ------------------------------------------------------------------ a. checks before the model


def test_missing_paths_and_bad_output_are_refused_before_the_model(tmp_path, refs, capsys, no_model) -> None:
    photo = save_photo(tmp_path / "p.png", 1)
    cases = [
        ([str(tmp_path / "nope.jpg")], "nope.jpg"),
        (["--ref", str(tmp_path / "ref.jpg"), "--ref-mask", str(tmp_path / "no_mask.png"), str(photo)], "no_mask.png"),
        (["--concept", str(tmp_path / "c.persam"), str(photo)], "c.persam"),
        (["--checkpoint", str(tmp_path / "w.pth"), str(photo)], "w.pth"),
    ]
    for argv, named in cases:
        base = [] if argv[0] in ("--ref", "--concept") else refs
        assert main(["segment", *base, *argv, "-o", str(tmp_path / "out"), *TINY]) == 2
        assert named in one_line_error(capsys)
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["segment", *refs, str(photo), "-o", str(out), *TINY]) == 2
        assert "file" in one_line_error(capsys)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_is_refused(tmp_path, refs, capsys, no_model) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["segment", *refs, str(save_photo(tmp_path / "p.png", 1)), "-o", str(locked / "out"), *TINY]) == 2
    assert "not writable" in one_line_error(capsys)


def test_missing_extra_names_the_install_command(tmp_path, refs, capsys, no_model, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else real(name, *a))
    assert (
        main(
            [
                "segment",
                *refs,
                str(save_photo(tmp_path / "p.png", 1)),
                "-o",
                str(tmp_path / "o"),
                "--format",
                "coco",
                *TINY,
            ]
        )
        == 2
    )
    assert 'pip install "persam[coco]"' in one_line_error(capsys)


# ------------------------------------------------------------------ b. names never collide


def test_output_stems_rule() -> None:
    pairs = [
        (Path("cat/01.jpg"), Path("01")),
        (Path("dog/01.jpg"), Path("01")),
        (Path("f/x.jpg"), Path("x")),
        (Path("f/x.png"), Path("x")),
        (Path("g/y.jpg"), Path("y")),
        (Path("h/Y.jpg"), Path("Y")),
    ]
    assert [s.as_posix() for s in output_stems(pairs)] == ["cat/01", "dog/01", "x_jpg", "x_png", "g/y", "h/Y"]
    taken = [(Path("a/x.jpg"), Path("x_jpg")), (Path("b/x.jpg"), Path("x")), (Path("b/x.png"), Path("x"))]
    assert [s.as_posix() for s in output_stems(taken)] == ["x_jpg", "x_jpg_2", "x_png"]


def test_colliding_targets_each_get_their_own_mask(tmp_path, refs, capsys) -> None:
    a = save_photo(tmp_path / "cat" / "01.jpg", 1)
    b = save_photo(tmp_path / "dog" / "01.jpg", 2)
    x_jpg, x_png = save_photo(tmp_path / "more" / "x.jpg", 3), save_photo(tmp_path / "more" / "x.png", 4)
    out = tmp_path / "out"
    assert main(["segment", *refs, str(a), str(b), str(tmp_path / "more"), "-o", str(out), *TINY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    masks = {e["input"]: e["mask"] for e in manifest["inputs"]}
    assert masks == {str(a): "cat/01.png", str(b): "dog/01.png", str(x_jpg): "x_jpg.png", str(x_png): "x_png.png"}
    assert all((out / m).is_file() for m in masks.values())
    assert manifest["complete"] is True


# ------------------------------------------------------------------ c. outputs are not inputs, d. summary


def test_output_folder_inside_the_input_folder(tmp_path, refs, capsys) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        save_photo(photos / f"p{i}.png", i)
    out = photos / "masks"
    for _ in range(2):
        assert main(["segment", *refs, str(photos), "-o", str(out), "--overwrite", *TINY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(Path(e["input"]).name for e in manifest["inputs"]) == ["p0.png", "p1.png", "p2.png"]
    # the folder's run lock (``persam.io.lock``) stays as a hidden file
    assert sorted(p.name for p in out.iterdir()) == [".persam.lock", "manifest.json", "p0.png", "p1.png", "p2.png"]
    captured = capsys.readouterr()
    assert "3 photos under the output folder" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("persam segment: 3 written (")


def test_summary_line_and_quiet(tmp_path, refs, capsys) -> None:
    photos = tmp_path / "photos"
    for i in range(2):
        save_photo(photos / f"p{i}.png", i)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["segment", *refs, str(photos), "-o", str(tmp_path / "o"), *TINY]) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("persam segment: 2 written (") and "1 skipped" in line
    assert main(["segment", *refs, str(photos), "-o", str(tmp_path / "o2"), "--quiet", *TINY]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "broken.jpg" in captured.err


# ------------------------------------------------------------------ e. resume


def test_rerun_skips_finished_photos_and_overwrite_redoes_them(tmp_path, refs, capsys) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        save_photo(photos / f"p{i}.png", i)
    out = tmp_path / "out"
    argv = ["segment", *refs, str(photos), "-o", str(out), "--format", "coco", *TINY]
    assert main(argv) == 0
    first = json.loads((out / "manifest.json").read_text())
    coco = json.loads((out / "annotations.json").read_text())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("p*.png")}
    (out / "p1.png").unlink()  # an incomplete photo is redone
    capsys.readouterr()
    assert main(argv) == 0
    assert "2 by an earlier run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("p*.png") if p.name != "p1.png"} == {
        k: v for k, v in stamps.items() if k != "p1.png"
    }
    assert (out / "p1.png").is_file()
    again = json.loads((out / "manifest.json").read_text())
    assert again["inputs"] == first["inputs"] and again["complete"]
    assert json.loads((out / "annotations.json").read_text()) == coco
    assert main([*argv, "--overwrite"]) == 0
    assert "earlier run" not in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in out.glob("p*.png") if p.name != "p1.png")


def test_changed_settings_or_photo_redo_the_work(tmp_path, refs, capsys) -> None:
    photos = tmp_path / "photos"
    for i in range(2):
        save_photo(photos / f"p{i}.png", i)
    out = tmp_path / "out"
    assert main(["segment", *refs, str(photos), "-o", str(out), *TINY]) == 0
    save_photo(photos / "p0.png", 9)  # new content under the same name
    capsys.readouterr()
    assert main(["segment", *refs, str(photos), "-o", str(out), *TINY]) == 0
    assert "1 by an earlier run" in capsys.readouterr().out
    assert main(["segment", *refs, str(photos), "-o", str(out), "--detect-absent", *TINY]) == 0
    assert "earlier run" not in capsys.readouterr().out


#: Runs ``persam segment`` in a process of its own whose segmenting sends Ctrl-C (SIGINT) to itself while the
#: third photo is segmented: a real signal to a real process (other tests' libraries never share its state).
CTRL_C_DRIVER = """
import os, signal, sys
import persam.session.dispatch as dispatch
from persam.cli.main import main
real, calls = dispatch.segment_photo, []
def interrupted(*args):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGINT)
    return real(*args)
dispatch.segment_photo = interrupted
code = main(sys.argv[1:])
print("calls", len(calls))
sys.exit(code)
"""


def test_ctrl_c_leaves_a_consistent_manifest(tmp_path, refs, capsys) -> None:
    import subprocess
    import sys

    photos = tmp_path / "photos"
    for i in range(6):
        save_photo(photos / f"p{i}.png", i)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(persam.session.photo.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    run = subprocess.run(
        [sys.executable, "-c", CTRL_C_DRIVER, "segment", *refs, str(photos), "-o", str(out), "--workers", "1", *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 130, run.stderr
    assert "Traceback" not in run.stderr and "calls 3" in run.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    # the photo being segmented is finished and recorded; none is started after it
    assert [Path(e["input"]).name for e in manifest["inputs"]] == ["p0.png", "p1.png", "p2.png"]
    assert sorted(p.name for p in out.glob("p*.png")) == ["p0.png", "p1.png", "p2.png"]
    assert main(["segment", *refs, str(photos), "-o", str(out), *TINY]) == 0
    assert "3 by an earlier run" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["inputs"]) == 6


# ------------------------------------------------------------------ f. index of another checkpoint, empty index


def test_index_of_another_checkpoint_is_one_error(tmp_path, refs, capsys, tiny_checkpoint) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        save_photo(photos / f"p{i}.png", i)
    idx = tmp_path / "album.idx"
    assert (
        main(
            [
                "index",
                str(photos),
                "-o",
                str(idx),
                "--model",
                "sam_tiny",
                "--checkpoint",
                str(tiny_checkpoint),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["segment", *refs, "--index", str(idx), "-o", str(tmp_path / "o"), *TINY]) == 2
    line = one_line_error(capsys)
    assert "album.idx" in line and "--checkpoint" in line
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_empty_file_as_index_is_an_error(tmp_path, refs, capsys, no_model) -> None:
    idx = tmp_path / "empty.idx"
    idx.write_bytes(b"")
    assert main(["segment", *refs, "--index", str(idx), "-o", str(tmp_path / "o"), *TINY]) == 2
    assert "empty.idx" in one_line_error(capsys)
    assert idx.stat().st_size == 0


def test_indexed_photo_deleted_since_is_segmented_from_its_embedding(tmp_path, refs, capsys, tiny_checkpoint) -> None:
    photos = tmp_path / "photos"
    for i in range(2):
        save_photo(photos / f"p{i}.png", i)
    idx = tmp_path / "album.idx"
    model = ["--model", "sam_tiny", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert main(["index", str(photos), "-o", str(idx), *model]) == 0
    (photos / "p1.png").unlink()
    out = tmp_path / "o"
    assert main(["segment", *refs, "--index", str(idx), "-o", str(out), *model]) == 0
    assert (out / "p1.png").is_file()
    assert main(["segment", *refs, "--index", str(idx), "-o", str(out), *model]) == 0
    assert (
        "1 by an earlier run" in capsys.readouterr().out.splitlines()[-1]
    )  # p0 (unchanged) is not redone; p1 has no file to compare
