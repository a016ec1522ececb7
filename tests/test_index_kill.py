"""Killing `persam index` midway (SIGKILL, a real process) loses nothing finished and leaves no corrupt entry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import persam
from conftest import synthetic_photo
from persam.session.rows import unpack_arrays

SRC = str(Path(persam.__file__).resolve().parents[1])
N = 6
KILLED_AT = 3
#: ``persam index`` in a process that SIGKILLs itself when it reads its 3rd photo: the first two are encoded
#: and committed, the third is not, on any machine however fast (a kill from outside may come too late, or
#: find a process that crashed before writing anything).
KILL_DRIVER = f"""
import os, signal, sys
import persam.io
from persam.cli.main import main
real, calls = persam.io.load_image, []
def killed(*args, **kwargs):
    calls.append(1)
    if len(calls) == {KILLED_AT}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
persam.io.load_image = killed
sys.exit(main(sys.argv[1:]))
"""


def _rows(idx: Path) -> list[tuple]:
    """(path, arrays blob) of every entry of the index."""
    with sqlite3.connect(idx) as con:
        return con.execute("SELECT path, arrays FROM rows").fetchall()


@pytest.mark.slow
def test_killed_index_resumes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(N):
        Image.fromarray(synthetic_photo(300, 400, seed=70 + i)[0]).save(photos / f"p{i}.png")
    idx = tmp_path / "album.idx"
    args = ["index", str(photos), "-o", str(idx), "--model", "sam_tiny", "--random-weights", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": SRC}
    first = subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    killed = _rows(idx)
    assert len(killed) == KILLED_AT - 1, killed  # every photo finished before the kill is in, none after
    rerun = subprocess.run(
        [sys.executable, "-m", "persam.cli.main", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N} photos indexed ({N - KILLED_AT + 1} encoded now, {KILLED_AT - 1} unchanged, 0 skipped)" in (
        rerun.stdout + rerun.stderr
    )
    rows = _rows(idx)
    assert sorted(r[0] for r in rows) == sorted(str(p.resolve()) for p in photos.glob("*.png"))
    assert set(killed) <= set(rows)  # the first run's entries are kept as they were
    # each entry whole: its checksums hold (unpack_arrays checks them) and every embedding has one shape
    shapes = {unpack_arrays(blob)["embedding"].shape for _, blob in rows}
    assert len(shapes) == 1 and len(next(iter(shapes))) >= 3
