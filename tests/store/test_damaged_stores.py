"""A damaged album store through the command line: one line naming the damaged file, a non-zero exit status,
the other photos still written, never a traceback and never a silent drop.

Damage as it happens: an ``.idx`` with one page overwritten (an entry's overflow page, the table's leaf
page, the header page); a Parquet part file cut short, replaced by garbage, or garbled inside."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import require
from persam.cli.main import main
from raycheck import ray_data_console_here

require("pyarrow.parquet")

MODEL = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
NAMES = ("p0.png", "p1.png", "p2.png")
RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING) ")  # Ray Data's progress log


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    ref, mask = synthetic_photo(96, 128, seed=50)
    Image.fromarray(ref).save(root / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "ref_mask.png")
    (root / "photos").mkdir()
    for i, name in enumerate(NAMES):
        Image.fromarray(synthetic_photo(96, 128, seed=60 + i)[0]).save(root / "photos" / name)
    concept = ["--ref", str(root / "ref.png"), "--ref-mask", str(root / "ref_mask.png")]
    assert main(["personalize", *concept, "-o", str(root / "c.persam"), *MODEL]) == 0
    return root


def index(album: Path, store: Path, *extra: str) -> int:
    return main(["index", str(album / "photos"), "-o", str(store), "--dtype", "float32", *extra, *MODEL])


def segment(album: Path, store: Path, out: Path, *extra: str) -> int:
    return main(
        ["segment", "--index", str(store), "--concept", str(album / "c.persam"), "-o", str(out), *extra, *MODEL]
    )


def one_line_naming(err: str, file: Path) -> str:
    """The one line of ``err``, checked to name ``file`` and to hold no traceback."""
    lines = [line for line in err.strip().splitlines() if not RAY_LOG.match(line)]
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(lines) == 1 and str(file) in lines[0], err
    return lines[0]


def overwrite_page(idx: Path, pick: str) -> int:
    """Overwrite one page of the SQLite file with random bytes; ``pick``: "overflow" (a page of p1's
    stored arrays), "leaf" (the table of photos) or "header" (page 1). Returns the page number."""
    with sqlite3.connect(idx) as con:
        size = con.execute("PRAGMA page_size").fetchone()[0]
        stats = con.execute("SELECT pageno, pagetype, name FROM dbstat ORDER BY pageno").fetchall()
    overflow = [(p, name) for p, kind, name in stats if kind == "overflow"]
    table = overflow[0][1]  # the table of photos: the one whose entries spill onto overflow pages
    if pick == "header":
        page = 1
    elif pick == "leaf":
        page = next(p for p, kind, name in stats if name == table and kind == "leaf")
    else:
        page = overflow[len(overflow) // 2][0]  # the middle photo's, p1
    data = bytearray(idx.read_bytes())
    data[(page - 1) * size : page * size] = np.random.default_rng(page).integers(0, 256, size, np.uint8).tobytes()
    idx.write_bytes(bytes(data))
    return page


@pytest.mark.parametrize("pick", ["overflow", "leaf", "header"])
def test_an_idx_with_a_page_overwritten(album, tmp_path, capsys, pick):
    idx = tmp_path / "album.idx"
    assert index(album, idx) == 0
    overwrite_page(idx, pick)
    capsys.readouterr()
    status = segment(album, idx, tmp_path / "out")
    err = capsys.readouterr().err
    line = one_line_naming(err, idx)
    if pick == "overflow":  # one entry damaged: that photo skipped, the others written
        assert status == 1 and "p1.png" in line
        entries = {
            Path(e["input"]).name: e for e in json.loads((tmp_path / "out" / "manifest.json").read_text())["inputs"]
        }
        assert entries["p1.png"]["status"] == "skipped" and str(idx) in entries["p1.png"]["reason"]
        assert entries["p0.png"]["status"] == entries["p2.png"]["status"] == "written"
        assert (tmp_path / "out" / "p0.png").is_file() and (tmp_path / "out" / "p2.png").is_file()
    else:  # the table or the header: nothing can be read
        assert status == 2 and "damaged" in line
    status = index(album, idx)
    one_line_naming(capsys.readouterr().err, idx)
    assert status != 0


def cut(part: Path) -> None:
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])


def garbage(part: Path) -> None:
    part.write_bytes(np.random.default_rng(0).integers(0, 256, part.stat().st_size, np.uint8).tobytes())


def garble_inside(part: Path) -> None:
    """Flip bytes in the middle of the file (the arrays' data page), footer intact."""
    data = bytearray(part.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    part.write_bytes(bytes(data))


def part_of(store: Path, name: str) -> Path:
    """The part file holding the row of photo ``name``."""
    import pyarrow.parquet as pq

    return next(
        p for p in store.glob("*.parquet") if any(x.endswith(name) for x in pq.read_table(p)["path"].to_pylist())
    )


@pytest.mark.parametrize("damage", [cut, garbage, garble_inside], ids=["cut", "garbage", "garbled"])
def test_a_damaged_part_file(album, tmp_path, capsys, damage):
    store = tmp_path / "store"
    assert index(album, store) == 0
    part = part_of(store, "p1.png")
    damage(part)
    capsys.readouterr()
    out = tmp_path / "out"
    assert segment(album, store, out) == 1
    one_line_naming(capsys.readouterr().err, part)
    entries = json.loads((out / "manifest.json").read_text())["inputs"]
    skipped = [e for e in entries if e["status"] == "skipped"]
    assert len(skipped) == 1 and str(part) in skipped[0]["reason"]  # listed, not dropped
    written = sorted(Path(e["input"]).name for e in entries if e["status"] == "written")
    assert written == ["p0.png", "p2.png"] and all((out / n).is_file() for n in written)
    assert index(album, store) == 1
    captured = capsys.readouterr()
    one_line_naming(captured.err, part)
    assert "1 encoded now, 2 unchanged" in captured.out


def test_a_store_whose_only_part_is_damaged_is_one_error(album, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(album / "photos" / "p0.png"), "-o", str(store), *MODEL]) == 0
    (part,) = store.glob("*.parquet")
    cut(part)
    capsys.readouterr()
    assert segment(album, store, tmp_path / "out") == 2
    assert "no photo of the store can be read" in one_line_naming(capsys.readouterr().err, part)


def test_ray_reports_a_damaged_part(album, tmp_path, capsys):
    ray = require("ray")
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False
    )
    try:
        ray_data_console_here()  # not a closed stream of an earlier test's capsys
        store = tmp_path / "store"
        assert index(album, store) == 0  # one part file per photo (a Ray part holds a whole block)
        part = part_of(store, "p1.png")
        garble_inside(part)
        capsys.readouterr()
        out = tmp_path / "out"
        assert segment(album, store, out, "--ray") == 1
        one_line_naming(capsys.readouterr().err, part)
        entries = json.loads((out / "manifest.json").read_text())["inputs"]
        assert sorted(Path(e["input"]).name for e in entries if e["status"] == "written") == ["p0.png", "p2.png"]
        cut(part)
        assert index(album, store, "--ray") == 1
        captured = capsys.readouterr()
        one_line_naming(captured.err, part)
        assert "1 encoded now, 2 unchanged" in captured.out
    finally:
        ray.shutdown()
