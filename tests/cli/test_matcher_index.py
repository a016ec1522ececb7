"""``segment --prior matcher --index``: the DINOv2 features stored by ``index --features dinov2``, no encoder run.

Tiny random SAM and a two-block random DINOv2 (same architecture as the real one). The indexed run is
counted: SAM's ``Backend.encode``, DINOv2's ``FeatureBackbone.encode`` and timm's ``forward_features``
are wrapped in-process and must not be called while it segments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extras import require

require("ot")
require("scipy")

from conftest import synthetic_photo  # noqa: E402
from persam.cli.main import main  # noqa: E402

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("tiny_dino")  # tests/conftest.py


@pytest.fixture
def counted(monkeypatch) -> dict[str, int]:
    """Calls of SAM's image encoder and DINOv2's forward, counted from when the fixture is used."""
    from timm.models.vision_transformer import VisionTransformer

    from persam.backends.base import Backend
    from persam.backends.dinov2 import FeatureBackbone

    calls = {"sam": 0, "dino": 0, "vit": 0}

    def wrap(cls, name: str, key: str) -> None:
        original = getattr(cls, name)

        def counting(self, *args, **kwargs):
            calls[key] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counting)

    wrap(Backend, "encode", "sam")
    wrap(FeatureBackbone, "encode", "dino")
    wrap(VisionTransformer, "forward_features", "vit")
    return calls


@pytest.fixture
def album(tmp_path: Path) -> Path:
    folder = tmp_path / "album"
    folder.mkdir()
    for seed in (3, 4, 5):
        Image.fromarray(synthetic_photo(72, 96, seed=seed)[0]).save(folder / f"p{seed}.png")
    return folder


@pytest.fixture
def concept(tmp_path: Path) -> Path:
    ref, mask = synthetic_photo(72, 96, seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    path = tmp_path / "c.persam"
    refs = ["--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png")]
    assert main(["personalize", *refs, "--prior", "matcher", "-o", str(path), *TINY]) == 0
    return path


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.array(Image.open(p)) > 0 for p in sorted(folder.glob("p*.png"))}


@pytest.mark.parametrize("store", ["album.idx", "store"])
def test_indexed_matcher_runs_no_encoder_and_matches_the_direct_run(tmp_path, album, concept, counted, store):
    if store == "store":
        require("pyarrow")
    index = tmp_path / store
    assert main(["index", str(album), "-o", str(index), "--features", "dinov2", "--dtype", "float32", *TINY]) == 0
    assert counted["sam"] == 3 and counted["dino"] == 3  # the index encoded each photo once, with both
    assert main(["segment", "--concept", str(concept), str(album), "-o", str(tmp_path / "direct"), *TINY]) == 0
    assert counted["sam"] == 6 and counted["dino"] == 6  # the direct run encodes them again
    before = dict(counted)
    out = tmp_path / "indexed"
    assert main(["segment", "--concept", str(concept), "--index", str(index), "-o", str(out), *TINY]) == 0
    assert counted == before, f"encoders ran during the indexed segment: {before} -> {counted}"
    direct, indexed = masks(tmp_path / "direct"), masks(out)
    assert sorted(direct) == ["p3.png", "p4.png", "p5.png"] and sorted(indexed) == sorted(direct)
    assert any(m.any() for m in direct.values())
    for name in direct:
        np.testing.assert_array_equal(indexed[name], direct[name], err_msg=name)


def test_index_without_features_refuses_a_matcher_concept_in_one_line(tmp_path, album, concept, capsys):
    index = tmp_path / "album.idx"
    assert main(["index", str(album), "-o", str(index), *TINY]) == 0
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["segment", "--concept", str(concept), "--index", str(index), "-o", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "DINOv2 features" in err[0] and "internal error" not in err[0]
    assert not out.exists() or not list(out.glob("p*.png"))


def test_features_of_another_dinov2_are_refused(tmp_path, album, concept, capsys):
    from persam.session.album import AlbumIndex

    index = tmp_path / "album.idx"
    assert main(["index", str(album), "-o", str(index), "--features", "dinov2", *TINY]) == 0
    opened = AlbumIndex.open(index, create=False)
    opened.record_meta({"dinov2_sha256": "0" * 64})
    opened.close()
    capsys.readouterr()
    out = str(tmp_path / "o")
    assert main(["segment", "--concept", str(concept), "--index", str(index), "-o", out, *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was learned with" in err[0], err
    # indexing more photos into it with the model's own DINOv2 is refused too, in one line
    assert main(["index", str(album), "-o", str(index), *TINY]) == 2
    assert "holds the features of DINOv2" in capsys.readouterr().err


def test_features_added_to_an_index_encode_its_photos_again(tmp_path, album, concept, counted):
    index = tmp_path / "album.idx"
    assert main(["index", str(album), "-o", str(index), *TINY]) == 0
    assert (counted["sam"], counted["dino"]) == (3, 0)
    assert main(["index", str(album), "-o", str(index), "--features", "dinov2", *TINY]) == 0
    assert (counted["sam"], counted["dino"]) == (6, 3)  # unchanged photos, but without features before
    assert main(["index", str(album), "-o", str(index), *TINY]) == 0
    assert (counted["sam"], counted["dino"]) == (6, 3)  # now nothing to do
    out = tmp_path / "o"
    assert main(["segment", "--concept", str(concept), "--index", str(index), "-o", str(out), *TINY]) == 0
    assert (counted["sam"], counted["dino"]) == (6, 3)
    assert len(list(out.glob("p*.png"))) == 3


def test_features_on_ray_are_refused_in_one_line(tmp_path, album, capsys):
    require("pyarrow")
    store = tmp_path / "store"
    assert main(["index", str(album), "-o", str(store), "--features", "dinov2", *TINY]) == 0
    capsys.readouterr()
    for extra in (["--features", "dinov2"], []):  # asked for, or the store already holds them
        assert main(["index", str(album), "-o", str(store), *extra, *TINY, "--ray"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--ray" in err[0] and "internal error" not in err[0], err


def test_encode_mode_on_ray_is_refused_in_one_line(tmp_path, album, capsys):
    """--encode chooses the local encoder's mode: with --ray it is refused, not ignored."""
    require("pyarrow")
    store = tmp_path / "store"
    assert main(["index", str(album), "-o", str(store), "--encode", "latency", *TINY, "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--encode" in err[0] and "internal error" not in err[0], err
    assert not store.exists()
