"""``run_davis`` on a tiny synthetic DAVIS 2017 layout, scored with ``evaluate_davis``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from davis_check import j_by_hand
from PIL import Image

from persam.eval.davis import evaluate_davis
from persam.io import save_label_map as save_palette  # DAVIS palette: colours differ from indices
from persam.jobs.davis import run_davis
from persam.jobs.synthetic import synthetic_clip_frame
from persam.jobs.video_bench import video_frame_extra_s


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory, clip_factory) -> Path:
    """Two sequences of 5 frames (3 and 2 objects); a void (255) border in one first annotation."""
    root = tmp_path_factory.mktemp("davis") / "DAVIS"
    for name, n_objects, seed in (("shapes", 3, 0), ("pair", 2, 1)):
        clip = clip_factory(n_frames=5, n_objects=n_objects, seed=seed)
        for i, (frame, labels) in enumerate(zip(clip.frames, clip.labels)):
            (root / "JPEGImages" / "480p" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(root / "JPEGImages" / "480p" / name / f"{i:05d}.jpg", quality=95)
            if name == "pair" and i == 0:
                labels = labels.copy()
                labels[:2] = 255
            save_palette(root / "Annotations" / "480p" / name / f"{i:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("shapes\npair\n")
    return root


@pytest.mark.parametrize("finetune", [False, True])
def test_run_davis_then_evaluate(tiny_model, davis_root, tmp_path, finetune):
    bars = []

    def progress(items, total, desc, unit="img"):
        bars.append((total, desc, unit))
        yield from items

    runs = run_davis(tiny_model, davis_root, tmp_path / "pred", finetune=finetune, progress=progress)
    assert [(r.name, r.frames, r.objects) for r in runs] == [("shapes", 5, (1, 2, 3)), ("pair", 5, (1, 2))]
    assert bars == [(5, "shapes", "frame"), (5, "pair", "frame")]
    for seq in ("shapes", "pair"):
        files = sorted(p.name for p in (tmp_path / "pred" / seq).iterdir())
        assert files == [f"{i:05d}.png" for i in range(5)]
        img = Image.open(tmp_path / "pred" / seq / "00002.png")
        assert img.mode == "P" and img.size == (128, 96)
    assert 255 not in np.unique(np.asarray(Image.open(tmp_path / "pred" / "pair" / "00000.png")))
    report = evaluate_davis(davis_root, tmp_path / "pred")
    assert sorted(o.key for o in report.objects) == ["pair_1", "pair_2", "shapes_1", "shapes_2", "shapes_3"]
    # the figures by value: each object's J by hand, and J&F the mean of the objects' (J-Mean + F-Mean) / 2
    for o in report.objects:
        want = j_by_hand(davis_root, tmp_path / "pred", o.sequence, o.object_id)
        np.testing.assert_allclose(o.j, want, atol=1e-9, err_msg=o.key)
        assert o.j_stats.mean == pytest.approx(np.mean(want), abs=1e-9)
    assert report.jf_mean == pytest.approx(np.mean([(o.j_stats.mean + o.f_stats.mean) / 2 for o in report.objects]))
    assert 0.0 < report.jf_mean < 1.0  # neither an empty prediction nor a copy of the ground truth


def test_run_davis_sequence_subset(tiny_model, davis_root, tmp_path):
    runs = run_davis(tiny_model, davis_root, tmp_path / "pred", sequences=["pair"])
    assert [r.name for r in runs] == ["pair"]
    assert not (tmp_path / "pred" / "shapes").exists()
    with pytest.raises(FileNotFoundError, match="nope"):
        run_davis(tiny_model, davis_root, tmp_path / "pred", sequences=["nope"])


def test_video_bench_helper(tiny_model):
    frame, labels = synthetic_clip_frame(160, 3)
    assert frame.shape == (120, 160, 3) and set(np.unique(labels)) == {0, 1, 2, 3}
    assert video_frame_extra_s(tiny_model, n_objects=3, size=160, runs=2) > 0
    with pytest.raises(ValueError):
        video_frame_extra_s(tiny_model, runs=0)
