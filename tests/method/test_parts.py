"""The part-aware prior (``persam.method.parts``) and its plumbing in the session API and concept files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from extras import require, require_path

require("sklearn")
require("ot")

from persam.backends.base import ImageGeometry  # noqa: E402
from persam.method import parts as parts_mod  # noqa: E402
from persam.method.parts import (  # noqa: E402
    build_part_prior,
    check_parts,
    kmeans_prototypes,
    mask_cells,
    part_cells,
    transport_cost,
)
from persam.method.target import target_cells  # noqa: E402

SAMPLE = next(
    (
        p / "shared" / "data" / "perseg-sample"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "data" / "perseg-sample").is_dir()
    ),
    Path("/nonexistent/perseg-sample"),
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture
def count_kmeans(monkeypatch):
    """Counts scikit-learn ``KMeans`` fits (the one place clustering runs)."""
    import sklearn.cluster

    calls = []
    real = sklearn.cluster.KMeans

    class Counting(real):
        def fit(self, *args, **kwargs):
            calls.append(self.n_clusters)
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(sklearn.cluster, "KMeans", Counting)
    return calls


# --- reference cells -------------------------------------------------------


def test_part_cell_needs_more_than_half_its_centre():
    # 64x64 photo, grid 4x4: a cell's sample is the mean of its 2x2 centre pixels.
    g = ImageGeometry.for_image((64, 64), 64, (4, 4))
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[0:16, 0:16] = True
    mask[7, 7] = False  # 3 of 4 centre pixels: in for P2SAM, out for PerSAM's rule
    assert part_cells(mask, g)[0, 0] and not target_cells(mask, g)[0, 0]
    mask[7, 8] = mask[8, 7] = False  # 1 of 4: out
    assert not part_cells(mask, g)[0, 0]
    mask[:] = False
    mask[7, 7] = mask[7, 8] = True  # exactly half: strict > 0, out
    mask[30, 30] = mask[30, 31] = mask[31, 30] = mask[31, 31] = True
    assert not part_cells(mask, g)[0, 0]


def test_part_cells_pad_with_zero():
    # Photo 24x64 in a 64x64 frame: cell row 1 spans rows 16..31, its centre rows 23-24 straddle the padding.
    g = ImageGeometry.for_image((24, 64), 64, (4, 4))
    mask = torch.zeros(24, 64, dtype=torch.bool)
    mask[:, :32] = True
    cells = part_cells(mask, g)
    assert cells[0, 0] and cells[0, 1] and not cells[0, 2]
    assert not cells[1, 0]  # half mask, half zero padding: exactly half, not > 0


# --- part counts and clustering -----------------------------------------


@pytest.mark.parametrize("bad", [(0, 3), (3, 2), (-1, 1)])
def test_part_ranges_are_checked(bad):
    with pytest.raises(ValueError, match="MIN..MAX"):
        check_parts(bad)


def test_one_part_is_the_normalised_mean(count_kmeans):
    cells = torch.randn(20, 8)
    proto = kmeans_prototypes(cells, 1)
    mean = cells.mean(0)
    assert torch.allclose(proto[0], mean / mean.norm(), atol=1e-6)
    assert count_kmeans == []


def test_prototypes_are_normalised_cluster_means():
    # two well separated groups: the prototypes are their normalised means, in either order
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 4, generator=g) * 0.01 + torch.tensor([5.0, 0, 0, 0])
    b = torch.randn(12, 4, generator=g) * 0.01 + torch.tensor([0, 0, 3.0, 1.0])
    protos = kmeans_prototypes(torch.cat([a, b]), 2)
    want = torch.stack([a.mean(0), b.mean(0)])
    want = want / want.norm(dim=1, keepdim=True)
    if protos[0, 0] < protos[1, 0]:
        protos = protos.flip(0)
    assert torch.allclose(protos, want, atol=1e-6)


def test_counts_above_the_cells_are_skipped(count_kmeans):
    prior = build_part_prior([torch.randn(2, 8), torch.randn(1, 8)], (1, 5))
    assert sorted(prior.prototypes) == [1, 2, 3] and prior.skipped == (4, 5)
    assert count_kmeans == [2, 3]
    with pytest.raises(ValueError, match="fewer than 4 parts"):
        build_part_prior([torch.randn(3, 8)], (4, 5))


# --- transport ---------------------------------------------------------------


def test_transport_cost_is_the_squared_wasserstein_distance():
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[1.0, 0.0]])
    assert transport_cost(a, b) == pytest.approx(1.0, abs=1e-12)
    shifted = a + torch.tensor([0.0, 3.0])
    assert transport_cost(a, shifted) == pytest.approx(9.0, abs=1e-12)  # every point moves by 3
    assert transport_cost(a, a.flip(0)) == pytest.approx(0.0, abs=1e-12)


def test_mask_cells_sample_the_logits_at_cell_centres():
    g = ImageGeometry.for_image((64, 64), 64, (4, 4))
    logits = torch.full((16, 16), -1.0)
    logits[0:4, 0:4] = 1.0
    cells = mask_cells(logits, g)
    assert cells[0, 0] and int(cells.sum()) == 1


# --- session API --------------------------------------------------------------


def test_part_aware_result_records_every_candidate(tiny_model, photo):
    image, mask = photo
    concept = tiny_model.personalize(image, mask, prior="part-aware", parts=(1, 3))
    assert concept.prior == "part-aware" and sorted(concept.parts.prototypes) == [1, 2, 3]
    result = concept.segment(image)
    assert [s.parts for s in result.part_scores] == [1, 2, 3]
    assert result.part_count in (1, 2, 3)
    n = result.part_count
    np.testing.assert_array_equal(result.point_labels, [1] * n + [0])
    winners = [s.transport for s in result.part_scores if s.transport is not None]
    assert winners, "no candidate scored: this photo cannot test the choice"  # the object is in the photo
    chosen = next(s.transport for s in result.part_scores if s.parts == n)
    assert chosen == min(winners)


def test_one_part_equals_persam_up_to_the_cell_rule(tiny_model, photo):
    image, mask = photo
    other = np.ascontiguousarray(np.roll(image, (9, 14), axis=(0, 1)))  # the object moved
    from persam.method.target import TargetFeatures, cell_features
    from persam.session.photo import Concept

    # PerSAM with the part-aware prior's reference cells instead of its own rule
    encoded = tiny_model.encode(image)
    cells = cell_features(encoded, part_cells(torch.from_numpy(mask), encoded.geometry))
    persam = Concept(model=tiny_model, target=TargetFeatures.from_cells([cells])).segment(other)
    result = tiny_model.personalize(image, mask, prior="part-aware", parts=(1, 1)).segment(other)
    assert result.part_count == 1
    np.testing.assert_array_equal(result.points_xy, persam.points_xy)
    assert iou(result.mask, persam.mask) >= 0.99


@pytest.mark.slow
def test_one_part_equals_persam_on_the_sample_photos():
    require_path(SAMPLE, "PerSeg sample photos")
    import persam

    torch.manual_seed(0)
    model = persam.load("vit_t", random_weights=True, device="cpu")
    values = []
    for obj in sorted(p.name for p in (SAMPLE / "Images").iterdir()):
        ref, ann = SAMPLE / "Images" / obj / "00.jpg", SAMPLE / "Annotations" / obj / "00.png"
        persam_concept = model.personalize(ref, ann)
        part_concept = model.personalize(ref, ann, prior="part-aware", parts=(1, 1))
        for idx in ("01", "02"):
            target = SAMPLE / "Images" / obj / f"{idx}.jpg"
            values.append((obj, idx, iou(part_concept.segment(target).mask, persam_concept.segment(target).mask)))
    print(values)
    assert all(v >= 0.99 for _, _, v in values), values


def test_one_reference_in_a_list_and_several_references(tiny_model, photo, count_kmeans):
    image, mask = photo
    single = tiny_model.personalize(image, mask, prior="part-aware", parts=(1, 3))
    listed = tiny_model.personalize([image], [mask], prior="part-aware", parts=(1, 3))
    for n in (1, 2, 3):
        assert torch.equal(single.parts.prototypes[n], listed.parts.prototypes[n])
    np.testing.assert_array_equal(single.segment(image).mask, listed.segment(image).mask)
    flipped = np.ascontiguousarray(image[:, ::-1])
    both = tiny_model.personalize([image, flipped], [mask, mask[:, ::-1]], prior="part-aware", parts=(1, 3))
    assert both.parts.cells.shape[0] == single.parts.cells.shape[0] + int(
        part_cells(torch.from_numpy(np.ascontiguousarray(mask[:, ::-1])), tiny_model.encode(flipped).geometry).sum()
    )
    assert count_kmeans == [2, 3] * 3  # clustered once per concept and count, over all references' cells


def test_part_aware_refuses_what_it_does_not_define(tiny_model, photo):
    image, mask = photo
    with pytest.raises(ValueError, match="training-free"):
        tiny_model.personalize(image, mask, prior="part-aware", finetune=True)
    with pytest.raises(ValueError, match="unknown prior"):
        tiny_model.personalize(image, mask, prior="parts")
    concept = tiny_model.personalize(image, mask, prior="part-aware", parts=(1, 2))
    with pytest.raises(ValueError, match="similarity prior only"):
        concept.segment_instances(image, max_instances=2)


def test_no_candidate_covering_a_cell_keeps_the_smallest_count(tiny_model, photo, monkeypatch):
    image, mask = photo
    concept = tiny_model.personalize(image, mask, prior="part-aware", parts=(2, 3))
    monkeypatch.setattr(
        parts_mod, "mask_cells", lambda logits, geometry: torch.zeros(geometry.grid_hw, dtype=torch.bool)
    )
    result = concept.segment(image)
    assert result.part_count == 2 and all(s.transport is None for s in result.part_scores)
    assert any("no candidate's mask covers a feature cell" in n for n in result.notes)


# --- work done once per concept ----------------------------------------------------


def test_saved_concept_and_album_index_segment_without_clustering(tiny_model, photo, tmp_path, count_kmeans):
    from PIL import Image

    from persam.session.album import AlbumIndex
    from persam.session.concept_file import load_concept, read_concept_metadata, save_concept

    image, mask = photo
    other = np.ascontiguousarray(np.roll(image, (12, -10), axis=(0, 1)))  # the object moved
    concept = tiny_model.personalize(image, mask, prior="part-aware")
    direct = concept.segment(other)
    path = save_concept(concept, tmp_path / "c.persam")
    meta, tensors = read_concept_metadata(path)
    assert meta["prior"] == "part-aware" and meta["parts"]["counts"] == [1, 2, 3, 4, 5]
    assert "part_prototypes_5" in tensors and tensors["part_cells"].shape == concept.parts.cells.shape
    fitted = len(count_kmeans)
    assert fitted == 4
    loaded = load_concept(path, tiny_model)
    photo_path = tmp_path / "other.png"
    Image.fromarray(other).save(photo_path)
    album = AlbumIndex.open(tmp_path / "album.db")
    album.add(photo_path, tiny_model.backend.encode(other), dtype="float32")
    from_index = loaded.segment(album.encoded(photo_path, tiny_model.backend))
    album.close()
    assert len(count_kmeans) == fitted, "segmenting from a saved concept clustered again"
    assert from_index.part_count == direct.part_count
    np.testing.assert_array_equal(from_index.mask, direct.mask)
    assert len(from_index.part_scores) == len(direct.part_scores)
    scored = [(a, b) for a, b in zip(from_index.part_scores, direct.part_scores) if b.transport is not None]
    assert scored, "no candidate scored: the scores would go unchecked"
    for a, b in zip(from_index.part_scores, direct.part_scores):
        assert a.parts == b.parts and (a.transport is None) == (b.transport is None)
    for a, b in scored:
        assert a.transport == pytest.approx(b.transport, rel=1e-5)


def test_similarity_concepts_stay_version_1(tiny_model, photo, tmp_path):
    from persam.session.concept_file import load_concept, read_concept_metadata, save_concept

    image, mask = photo
    meta, _ = read_concept_metadata(save_concept(tiny_model.personalize(image, mask), tmp_path / "s.persam"))
    assert meta["version"] == 1 and meta["prior"] == "similarity" and meta["parts"] is None
    assert load_concept(tmp_path / "s.persam", tiny_model).parts is None


def test_refinement_runs_all_part_counts_together(tiny_model, photo, monkeypatch):
    image, mask = photo
    concept = tiny_model.personalize(image, mask, prior="part-aware")
    calls = []
    real = parts_mod.refine

    def counting(backend, encoded, starts, boxes, box_first):
        calls.append([int(s.point_labels.sum()) for s in starts])
        return real(backend, encoded, starts, boxes, box_first)

    monkeypatch.setattr(parts_mod, "refine", counting)
    result = concept.segment(image)
    assert calls == [[1, 2, 3, 4, 5]]
    assert len(result.prompts) == 3  # guided pass and two refinements of the chosen count
