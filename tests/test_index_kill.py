"""Killing `persam index` midway loses nothing finished and leaves no corrupt entry."""

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import synthetic_photo
from persam.session.rows import unpack_arrays


@pytest.mark.slow
def test_killed_index_resumes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(synthetic_photo(300, 400, seed=70 + i)[0]).save(photos / f"p{i}.png")
    idx = tmp_path / "album.idx"
    cmd = [
        sys.executable,
        "-m",
        "persam.cli.main",
        "index",
        str(photos),
        "-o",
        str(idx),
        "--model",
        "vit_t",
        "--random-weights",
        "--device",
        "cpu",
    ]  # ~1 s per photo on a CPU
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if idx.exists():
            try:
                with sqlite3.connect(idx) as con:
                    done = con.execute("SELECT count(*) FROM rows").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
        if done >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    if done < 2 or done >= 6:
        pytest.skip(f"could not stop the indexer midway (it had indexed {done} photos)")
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - done} encoded now" in rerun.stdout or f"{6 - done - 1} encoded now" in rerun.stdout
    with sqlite3.connect(idx) as con:
        rows = con.execute("SELECT path, arrays FROM rows").fetchall()
    assert sorted(r[0] for r in rows) == sorted(str(p.resolve()) for p in photos.glob("*.png"))
    for _, blob in rows:  # each entry whole: its checksum holds and the embedding has its shape
        assert unpack_arrays(blob)["embedding"].shape == (1, 256, 64, 64)
