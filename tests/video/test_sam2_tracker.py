"""Tracking with SAM 2's video predictor (``--tracker sam2``) on the reduced ``sam2_tiny`` architecture.

The official predictor is run independently here (``init_state`` on a JPEG
folder, ``add_new_mask``, ``propagate_in_video``) and compared with what
persam writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from davis_check import j_by_hand
from PIL import Image

from extras import require
from persam.cli.main import main
from persam.io import load_image
from persam.io import save_label_map as save_palette

require("sam2")

N_FRAMES = 20  # beyond the default memory window (17 frames), so old outputs are dropped


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory) -> Path:
    from persam.backends.sam2_models import write_random_checkpoint

    return write_random_checkpoint("sam2_tiny", tmp_path_factory.mktemp("sam2") / "sam2_tiny.pt", seed=0)


@pytest.fixture(scope="module")
def predictor(sam2_checkpoint):
    from persam.session.video_predictor import load_video_predictor

    model, sha = load_video_predictor("sam2_tiny", str(sam2_checkpoint), device="cpu")
    assert sha != "random"
    return model


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory, clip_factory) -> Path:
    """One DAVIS-layout sequence of 20 JPEG frames, two objects, a void (255) band in the first annotation."""
    root = tmp_path_factory.mktemp("davis2") / "DAVIS"
    clip = clip_factory(n_frames=N_FRAMES, n_objects=2, seed=3)
    frames, annotations = root / "JPEGImages" / "480p" / "pair", root / "Annotations" / "480p" / "pair"
    frames.mkdir(parents=True)
    for i, (frame, labels) in enumerate(zip(clip.frames, clip.labels)):
        Image.fromarray(frame).save(frames / f"{i:05d}.jpg", quality=95)
        if i == 0:
            labels = labels.copy()
            labels[:2] = 255
        save_palette(annotations / f"{i:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("pair\n")
    return root


@pytest.fixture(scope="module")
def official(predictor, davis_root):
    """The package's own predictor on the JPEG folder: frame -> {object id: (H, W) logits}, and its state's keys."""
    from persam.eval.davis import read_davis_labels

    labels = read_davis_labels(davis_root / "Annotations" / "480p" / "pair" / "00000.png")
    labels = np.where(labels == 255, 0, labels)
    state = predictor.init_state(str(davis_root / "JPEGImages" / "480p" / "pair"))
    for oid in (1, 2):
        predictor.add_new_mask(state, 0, oid, torch.from_numpy(labels == oid))
    out = {
        t: {int(o): logits[k, 0].float().numpy() for k, o in enumerate(ids)}
        for t, ids, logits in predictor.propagate_in_video(state)
    }
    return out, set(state)


def merged(logits: dict[int, np.ndarray]) -> np.ndarray:
    """The documented merge: arg-max of the objects' logits against a zero background."""
    ids = sorted(logits)
    stack = np.stack([logits[o] for o in ids])
    return np.where(stack.max(0) > 0, np.array(ids)[stack.argmax(0)], 0)


def test_tracker_equals_the_official_predictor(predictor, davis_root, official):
    from persam.session.tracker import SamTracker

    expected, official_keys = official
    folder = davis_root / "JPEGImages" / "480p" / "pair"
    first = np.asarray(Image.open(davis_root / "Annotations" / "480p" / "pair" / "00000.png"))
    masks = {oid: first == oid for oid in (1, 2)}
    frames = (load_image(p) for p in sorted(folder.iterdir()))
    tracker = SamTracker(predictor, frames, masks, count=N_FRAMES)
    assert set(tracker.state) == official_keys
    seen = []
    for frame in tracker.run():
        seen.append(frame.index)
        for oid in (1, 2):
            assert iou(frame.masks[oid], expected[frame.index][oid] > 0) >= 0.99, (frame.index, oid)
        # at most the model's window of non-conditioning outputs is kept
        held = tracker.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
        assert all(t >= frame.index - tracker.window for t in held)
    assert seen == list(range(N_FRAMES))
    assert tracker.images.decoded == N_FRAMES and len(tracker.images._cache) <= tracker.images.keep
    assert len(tracker.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]) <= tracker.window + 1


def test_eval_davis_cli_writes_and_scores_official_tracks(davis_root, official, sam2_checkpoint, tmp_path, capsys):
    expected, _ = official
    out, report = tmp_path / "pred", tmp_path / "davis.json"
    rc = main(
        [
            "eval",
            "davis",
            str(davis_root),
            "--tracker",
            "sam2",
            "--model",
            "sam2_tiny",
            "--checkpoint",
            str(sam2_checkpoint),
            "--device",
            "cpu",
            "-o",
            str(out),
            "--json",
            str(report),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    written = sorted(p.name for p in (out / "pair").iterdir())
    assert written == [f"{i:05d}.png" for i in range(N_FRAMES)]
    for i in range(N_FRAMES):
        labels = np.asarray(Image.open(out / "pair" / f"{i:05d}.png"))
        official_labels = merged(expected[i])
        for oid in (1, 2):
            assert iou(labels == oid, official_labels == oid) >= 0.99, (i, oid)
    data = json.loads(report.read_text())
    assert data["tracker"] == "sam2" and set(data["objects"]) == {"pair_1", "pair_2"}
    # the report's figures by value: J-Mean from the written masks by hand, J&F from the evaluator on them
    from persam.eval.davis import evaluate_davis

    j_means = [float(np.mean(j_by_hand(davis_root, out, "pair", oid))) for oid in (1, 2)]
    assert data["J-Mean"] == pytest.approx(np.mean(j_means), abs=1e-6)
    assert data["J&F"] == pytest.approx(evaluate_davis(davis_root, out).jf_mean, abs=1e-6)
    assert 0.0 < data["J&F"] < 1.0


def test_eval_davis_tracker_refuses_what_does_not_apply(davis_root, tmp_path, capsys):
    rc = main(
        [
            "eval",
            "davis",
            str(davis_root),
            "--tracker",
            "sam2",
            "--model",
            "sam2_tiny",
            "--random-weights",
            "--method",
            "persam",
            "-o",
            str(tmp_path / "p"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--method has no effect with --tracker sam2" in err
    rc = main(["eval", "davis", str(davis_root), "--tracker", "sam2", "--random-weights", "-o", str(tmp_path / "p")])
    assert rc == 2 and "needs --model" in capsys.readouterr().err


def test_tracker_bench_times_every_tracked_frame(predictor):
    from persam.jobs.tracker_bench import bench_tracker, format_tracker_bench

    result = bench_tracker(predictor, "sam2_tiny", random_weights=False, n_objects=2, size=128, frames=3)
    assert result.frame_hw == (96, 128) and result.objects == 2 and len(result.frame_times_s) == 2
    assert result.frame_s > 0 and result.seed_s > 0 and result.state_mb > 0
    assert "tracked frame, median of 2" in format_tracker_bench(result)
    with pytest.raises(ValueError, match="at least 2 frames"):
        bench_tracker(predictor, "sam2_tiny", random_weights=False, frames=1)
