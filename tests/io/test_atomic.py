"""persam.io.atomic: the one atomic writer (umask, cleanup, one-line errors)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from persam.io.atomic import (
    OutputPathError,
    PendingFile,
    atomic_open,
    atomic_path,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("writer", ["text", "json", "save", "save_new_file", "open", "path", "pending"])
def test_files_get_the_users_umask(tmp_path, umask_027, writer):
    target = tmp_path / "new" / "deeper" / f"out-{writer}.txt"  # parent folders are created
    if writer == "text":
        atomic_write_text(target, "x")
    elif writer == "json":
        atomic_write_json(target, {"a": 1})
    elif writer == "save":
        atomic_save(target, lambda tmp: open(tmp, "w").write("x"))
    elif writer == "save_new_file":  # a writer that replaces the file with a private one (as safetensors does)

        def private(tmp):
            os.unlink(tmp)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))

        atomic_save(target, private)
    elif writer == "open":
        with atomic_open(target) as fh:
            fh.write(b"x")
    elif writer == "path":
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    else:
        pending = PendingFile(target)
        pending.temp.write_text("x")
        pending.commit()
    assert _mode(target) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_other_umask_gives_other_mode(tmp_path):
    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o664


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_error_inside_writer_leaves_no_temp_and_keeps_old_file(tmp_path, error):
    target = tmp_path / "out.json"
    target.write_text("old")

    def save(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise error

    with pytest.raises(type(error)):
        atomic_save(target, save)
    with pytest.raises(type(error)):
        with atomic_open(target) as fh:
            fh.write(b"half")
            raise error
    assert os.listdir(tmp_path) == ["out.json"]
    assert target.read_text() == "old"


def test_json_with_nan_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"x": float("nan")})
    assert os.listdir(tmp_path) == []
    atomic_write_json(tmp_path / "r.json", {"x": None, "y": [1.5]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": None, "y": [1.5]}
    assert (tmp_path / "r.json").read_text().endswith("}\n")


def test_file_where_a_folder_is_needed_names_the_target(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    target = blocker / "sub" / "masks.png"
    with pytest.raises(OutputPathError) as excinfo:
        atomic_write_text(target, "x")
    msg = str(excinfo.value)
    assert str(target) in msg and "\n" not in msg and ".tmp" not in msg
    assert "choose another output path" in msg
    assert isinstance(excinfo.value, PermissionError)  # reported by the CLI as a user error


def test_target_that_is_a_folder_names_the_target(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(OutputPathError) as excinfo:
        atomic_write_text(target, "x")
    msg = str(excinfo.value)
    assert str(target) in msg and ".tmp" not in msg and "\n" not in msg
    assert sorted(os.listdir(tmp_path)) == ["taken"]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_unwritable_folder_names_the_target(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputPathError) as excinfo:
            atomic_write_text(folder / "a.txt", "x")
    finally:
        folder.chmod(0o700)
    msg = str(excinfo.value)
    assert str(folder / "a.txt") in msg and "choose a folder you can write to" in msg


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []


def test_concept_style_safetensors_file_gets_the_umask(tmp_path, umask_027):
    import torch
    from safetensors.torch import save_file

    atomic_save(tmp_path / "c.persam", lambda tmp: save_file({"a": torch.zeros(2)}, tmp))
    assert _mode(tmp_path / "c.persam") == 0o640


# ------------------------------------------------------- what a hard kill leaves


def test_remove_stale_temps_takes_only_old_temp_files_of_its_own_naming(tmp_path):
    import os
    import time

    from persam.io.atomic import PendingFile, remove_stale_temps

    out, sub, elsewhere = tmp_path / "out", tmp_path / "out" / "trip", tmp_path / "out" / "not-written"
    for folder in (out, sub, elsewhere):
        folder.mkdir(parents=True, exist_ok=True)
    stale = [PendingFile(out / "a.png").temp, PendingFile(sub / "b.png").temp, out / ".manifest.json.0123abcd.tmp"]
    stale[-1].write_text("{")
    kept = [
        out / ".a.png.0123ABCD.tmp",
        out / ".a.png.0123abc.tmp",
        out / "a.png.0123abcd.tmp",
        out / ".notes.tmp",
        out / "a.png",
        PendingFile(elsewhere / "c.png").temp,
    ]
    for path in kept:
        path.touch()
    (out / ".dir.0123abcd.tmp").mkdir()  # a folder of that name is not a temp file
    fresh = PendingFile(out / "d.png").temp  # newer than the run: another writer's, at work now
    old = time.time() - 60
    for path in [*stale, *kept, fresh.with_name("unused")]:
        if path.exists():
            os.utime(path, (old, old))
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    removed = remove_stale_temps([out, sub, out, tmp_path / "missing"], before=time.time())
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in [*kept, fresh, out / ".dir.0123abcd.tmp"])
