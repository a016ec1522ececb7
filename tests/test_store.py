"""The Parquet embedding store on the local path (no Ray): same masks as the SQLite index, resume, damage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import require
from persam.cli.main import main

pq = require("pyarrow.parquet")

MODEL = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


@pytest.fixture
def album(tmp_path):
    ref, mask = synthetic_photo(seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.jpg")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    (tmp_path / "photos").mkdir()
    for i in range(10):
        Image.fromarray(synthetic_photo(64, 80, seed=200 + i)[0]).save(tmp_path / "photos" / f"p{i}.png")
    main(
        [
            "personalize",
            "--ref",
            str(tmp_path / "ref.jpg"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "-o",
            str(tmp_path / "c.persam"),
            *MODEL,
        ]
    )
    return tmp_path


def test_store_and_sqlite_index_give_the_same_masks(album, capsys):
    photos = str(album / "photos")
    assert main(["index", photos, "-o", str(album / "store"), "--dtype", "float32", *MODEL]) == 0
    assert main(["index", photos, "-o", str(album / "album.idx"), "--dtype", "float32", *MODEL]) == 0
    assert (album / "store" / "store.json").is_file() and (album / "album.idx").is_file()
    assert main(["index", photos, "-o", str(album / "store"), *MODEL]) == 0
    assert "0 encoded now, 10 unchanged" in capsys.readouterr().out
    seg = ["--concept", str(album / "c.persam"), *MODEL]
    assert main(["segment", "--index", str(album / "store"), "-o", str(album / "a"), *seg]) == 0
    assert main(["segment", "--index", str(album / "album.idx"), "-o", str(album / "b"), *seg]) == 0
    for i in range(10):
        assert np.array_equal(
            np.asarray(Image.open(album / "a" / f"p{i}.png")), np.asarray(Image.open(album / "b" / f"p{i}.png"))
        )
    a = json.loads((album / "a" / "manifest.json").read_text())
    b = json.loads((album / "b" / "manifest.json").read_text())
    # the runs read two indexes: their specs differ in the index only, and so do their resume keys
    for m, index in ((a, album / "store"), (b, album / "album.idx")):
        assert m["spec"].pop("index") == str(index)
        key = m.pop("spec_key")
        assert all(e.pop("spec_key") == key for e in m["inputs"])
    assert a == b


def test_a_cut_part_file_is_left_out_and_its_photos_encoded_again(album, capsys):
    store = album / "store"
    assert main(["index", str(album / "photos"), "-o", str(store), *MODEL]) == 0
    parts = sorted(store.glob("*.parquet"))
    assert len(parts) == 10  # one part file per photo: a kill loses at most the photo in flight
    parts[0].write_bytes(parts[0].read_bytes()[:1000])  # as a copy cut short
    capsys.readouterr()
    assert main(["index", str(album / "photos"), "-o", str(store), *MODEL]) == 1  # the damage is reported
    out = capsys.readouterr()
    assert "1 encoded now, 9 unchanged" in out.out
    assert out.err.count("\n") == 1 and f"{parts[0]}: damaged part file, left out" in out.err
    assert "its photos are encoded again" in out.err


def test_ray_options_need_ray(album, capsys):
    assert main(["index", str(album / "photos"), "-o", str(album / "s"), "--ray-workers", "2", *MODEL]) == 2
    assert "--ray-workers has no effect without --ray" in capsys.readouterr().err
    assert main(["index", str(album / "photos"), "-o", str(album / "x.idx"), "--ray", *MODEL]) == 2
    assert "not the SQLite file" in capsys.readouterr().err
