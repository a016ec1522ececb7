"""Several instances, absent objects, concept files, the album index."""

import numpy as np
import pytest
import torch

from conftest import synthetic_photo
from fakes import color_backend
from persam.method.settings import PersamSettings
from persam.session.photo import PersamModel

PLAIN = PersamSettings(guided_attention=False, semantic_prompt=False)  # the fake decoder has nothing to guide


def scene(squares: list[tuple[int, int]], size=(256, 256), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Grey textured photo with 32x32 red squares at (row, col) cell-aligned corners."""
    rng = np.random.default_rng(seed)
    img = (rng.integers(100, 140, size=(size[0] // 16, size[1] // 16, 1)) * np.ones((1, 1, 3))).astype(np.uint8)
    img = np.kron(img, np.ones((16, 16, 1), dtype=np.uint8))
    mask = np.zeros(size, dtype=bool)
    for r, c in squares:
        img[r : r + 32, c : c + 32] = (210, 20, 20)
        mask[r : r + 32, c : c + 32] = True
    return img, mask


@pytest.fixture
def color_model():
    return PersamModel(color_backend())


def test_presence_threshold_is_calibrated(color_model):
    concept = color_model.personalize(*scene([(32, 32)]), settings=PLAIN)
    assert concept.presence.fg_mean > 0.99  # the red cells match themselves
    assert concept.presence.bg_max < 0.5  # grey cells do not
    assert concept.presence.bg_max < concept.threshold < concept.presence.fg_mean


def test_absent_object_gives_empty_mask(color_model):
    concept = color_model.personalize(*scene([(32, 32)]), settings=PLAIN)
    present = concept.segment(scene([(160, 96)], seed=1)[0], detect_absent=True)
    absent = concept.segment(scene([], seed=2)[0], detect_absent=True)
    assert present.present and present.mask[170, 100]
    assert not absent.present and not absent.mask.any()
    assert absent.score < concept.threshold
    # Without detection (the reference behaviour) a mask is always returned.
    assert concept.segment(scene([], seed=2)[0]).present


def test_all_instances_found_with_one_encoding(color_model):
    concept = color_model.personalize(*scene([(32, 32)]), settings=PLAIN)
    photo, truth = scene([(16, 16), (16, 176), (160, 96)], seed=3)
    before = color_model.backend.encoder_calls
    found = concept.segment_instances(photo, max_instances=5)
    assert color_model.backend.encoder_calls - before == 1
    assert len(found.instances) == 3
    assert set(np.unique(found.labels)) == {0, 1, 2, 3}
    got = found.labels > 0
    assert (got & truth).sum() / (got | truth).sum() > 0.95
    capped = concept.segment_instances(photo, max_instances=2)
    assert len(capped.instances) == 2
    # absence is detected only when asked, as with ``segment`` (the same default)
    none = concept.segment_instances(scene([], seed=4)[0], detect_absent=True)
    assert [r.present for r in none.instances] == [False] and not none.labels.any()


def test_override_threshold(color_model):
    concept = color_model.personalize(*scene([(32, 32)]), settings=PLAIN)
    concept.presence_threshold = 1.01  # nothing can pass
    assert not concept.segment(scene([(160, 96)], seed=1)[0], detect_absent=True).present


def test_concept_file_round_trip(tiny_model, tmp_path):
    from persam.session.concept_file import load_concept, save_concept

    image, mask = synthetic_photo(seed=21)
    other = synthetic_photo(seed=22)[0]
    for finetune in (False, True):
        concept = tiny_model.personalize(image, mask, finetune=finetune)
        path = save_concept(concept, tmp_path / f"c{finetune}.persam")
        loaded = load_concept(path, tiny_model)
        assert loaded.method == concept.method and loaded.threshold == concept.threshold
        assert np.array_equal(loaded.segment(other).mask, concept.segment(other).mask)


def test_damaged_or_foreign_concepts_are_refused(tiny_model, tmp_path):
    import persam
    from persam.session.concept_file import load_concept, save_concept

    path = save_concept(tiny_model.personalize(*synthetic_photo(seed=23)), tmp_path / "c.persam")
    data = path.read_bytes()
    (tmp_path / "flipped.persam").write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
    (tmp_path / "cut.persam").write_bytes(data[: len(data) // 2])
    for bad in ("flipped.persam", "cut.persam"):
        with pytest.raises(ValueError, match="damaged"):
            load_concept(tmp_path / bad, tiny_model)
    torch.manual_seed(5)
    other_weights = persam.load("sam_tiny", random_weights=True, device="cpu")
    other_weights.backend.checkpoint_sha256 = "0" * 64
    with pytest.raises(ValueError, match="another checkpoint"):
        load_concept(path, other_weights)
    with pytest.raises(ValueError, match="made with model 'sam_tiny'"):
        load_concept(path, PersamModel(color_backend()))


def test_album_index_resumes_and_matches_direct_run(tiny_model, tmp_path):
    from PIL import Image

    from persam.session.album import AlbumIndex

    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(synthetic_photo(seed=30 + i)[0]).save(p)
        paths.append(p)
    album = AlbumIndex.open(tmp_path / "album.idx")
    album.bind(tiny_model.backend)
    for p in paths[:2]:  # "interrupted" after two photos
        album.add(p, tiny_model.backend.encode(np.asarray(Image.open(p))), "float32")
    album.close()
    album = AlbumIndex.open(tmp_path / "album.idx", create=False)
    assert [album.needs(p) for p in paths] == [False, False, True]
    Image.fromarray(synthetic_photo(seed=99)[0]).save(paths[0])  # changed on disk
    assert album.needs(paths[0])
    album.add(paths[0], tiny_model.backend.encode(np.asarray(Image.open(paths[0]))), "float32")
    concept = tiny_model.personalize(*synthetic_photo(seed=40))
    direct = concept.segment(np.asarray(Image.open(paths[0])))
    indexed = concept.segment(album.encoded(paths[0], tiny_model.backend))
    assert np.array_equal(direct.mask, indexed.mask)
