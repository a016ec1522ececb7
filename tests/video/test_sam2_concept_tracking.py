"""``persam video --tracker sam2 --concept``: PerSAM finds the object (no first-frame mask), SAM 2 tracks it,
and PerSAM finds it again after SAM 2 lost it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import write_video
from extras import require
from persam.cli.main import main
from persam.jobs.synthetic import tiled_texture

require("sam2")
av = require("av")

H, W = 96, 128
AWAY = range(4, 9)  # frames where the object is out of the picture
N_FRAMES = 13
SAM2_TINY = ["--model", "sam2_tiny", "--random-weights", "--device", "cpu"]


def leaving_clip(away: range = AWAY, count: int = N_FRAMES) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A red square drifting right; gone on frames ``away`` (4..8: back from frame 9). Frames and (H, W) bool masks."""
    background = tiled_texture((H, W), np.random.default_rng(5), tile=8, low=70, high=160)
    yy, xx = np.mgrid[0:H, 0:W]
    frames, masks = [], []
    for t in range(count):
        frame = background.copy()
        x0 = 30 + 2 * t
        mask = (yy >= 30) & (yy < 62) & (xx >= x0) & (xx < x0 + 32) & (t not in away)
        frame[mask] = (220, 40, 40)
        frames.append(frame)
        masks.append(mask)
    return frames, masks


def frame_folder(root: Path, count: int) -> tuple[Path, Path]:
    """The clip's first ``count`` frames as PNGs in ``root/frames``, and frame 0's mask as ``root/first.png``."""
    frames, masks = leaving_clip()
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:count]):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(root / "first.png")
    return folder, root / "first.png"


@pytest.fixture(scope="module")
def concept_file(tmp_path_factory) -> Path:
    """A concept made by ``persam personalize`` on the tiny SAM from frame 0 of the clip (presence calibrated)."""
    root = tmp_path_factory.mktemp("concept")
    frames, masks = leaving_clip()
    Image.fromarray(frames[0]).save(root / "ref.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(root / "ref_mask.png")
    out = root / "dog.persam"
    rc = main(
        [
            "personalize",
            "--ref",
            str(root / "ref.png"),
            "--ref-mask",
            str(root / "ref_mask.png"),
            "--model",
            "sam_tiny",
            "--random-weights",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_video_from_a_concept_with_no_first_frame_mask(tmp_path, concept_file, capsys):
    """The CLI on a JPEG frame folder (the package's own loader reads the same bytes): frame 0 is conditioned on
    the mask PerSAM finds there (SAM 2.1 returns that mask, through its low-resolution logits), and frames 1-3,
    the tracking itself, are the package's propagation from it."""
    frames, _ = leaving_clip()
    folder, decoded = jpeg_frames(frames[:4], tmp_path / "jpg")
    out, overlay = tmp_path / "out", tmp_path / "out.mp4"
    rc = main(
        [
            "video",
            str(folder),
            "--concept",
            str(concept_file),
            "--tracker",
            "sam2",
            "-o",
            str(out),
            "--overlay-video",
            str(overlay),
            *SAM2_TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(4)]
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    (obj,) = manifest["objects"]
    (seed,) = obj["seeds"]
    assert seed["frame"] == 0 and seed["source"] == "concept"
    assert seed["prompts"] and seed["prompts"][0]["points_xy"] and "box_xyxy" in seed["prompts"][0]
    import torch

    import persam
    from persam.session.concept_file import load_concept
    from persam.session.video_predictor import load_video_predictor

    torch.manual_seed(0)
    concept = load_concept(concept_file, persam.load("sam_tiny", random_weights=True, device="cpu"))
    found = concept.segment(decoded[0]).mask
    assert found.any()
    written = [np.asarray(Image.open(out / f"{i:05d}.png")) == 1 for i in range(4)]
    torch.manual_seed(0)
    official, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    state = official.init_state(str(folder))
    official.add_new_mask(state, 0, 1, torch.from_numpy(found))
    expected = {t: logits[0, 0].numpy() > 0 for t, _, logits in official.propagate_in_video(state)}
    # the conditioning frame is the input mask passed through SAM 2's low-resolution mask (add_new_mask's output);
    # the frames after it are the tracking itself
    assert iou(written[0], expected[0]) >= 0.99
    after = {t: iou(written[t], expected[t]) for t in range(1, 4)}
    assert min(after.values()) >= 0.99, after
    assert all(written[t].any() for t in after)


def jpeg_frames(frames: list[np.ndarray], folder: Path) -> tuple[Path, list[np.ndarray]]:
    """Write ``frames`` as ``folder/00000.jpg, ...`` and read them back: the same decoded pixels for persam's
    tracker and the package's own JPEG loader. Returns (folder, the decoded (H, W, 3) uint8 frames)."""
    from persam.io import load_image

    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return folder, [load_image(p) for p in sorted(folder.iterdir())]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_lost_object_is_found_again_by_its_concept(concept_file, tmp_path):
    """SAM 2 loses the object when it leaves; PerSAM's searches fail while it is away and find it on its return.

    The random-weight tracker's object score does not react to the object
    leaving (it stays near +0.1 on every frame), so the object-score head is
    made controllable: from the frame the object leaves, its output is
    replaced by -10 (object absent) until persam re-prompts SAM 2, i.e. a
    tracker that does not pick the object up again by itself. Everything
    else is real: SAM 2 fills the lost object's logits with -1024, PerSAM
    (tiny SAM, the concept's calibrated presence check) searches each
    ``lost_after``-th lost frame, and the mask it finds is added to the
    predictor as a conditioning mask from which tracking resumes.
    """
    import torch

    import persam
    from persam.session.concept_file import load_concept
    from persam.session.tracker import SamTracker, TrackerSettings, concept_locator
    from persam.session.video_predictor import load_video_predictor

    raw, truth = leaving_clip()
    folder, frames = jpeg_frames(raw, tmp_path / "jpg")  # the same decoded pixels for the package's replay
    torch.manual_seed(0)
    concept = load_concept(concept_file, persam.load("sam_tiny", random_weights=True, device="cpu"))
    torch.manual_seed(0)
    predictor, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    searched: list[tuple[int, bool]] = []
    locate = concept_locator({1: concept})

    def logged(oid, frame):
        found = locate(oid, frame)
        searched.append((tracker.images.decoded - 1, found is not None))
        return found

    first = concept.segment(frames[0]).mask
    tracker = SamTracker(
        predictor, iter(frames), {1: first}, count=N_FRAMES, locate=logged, settings=TrackerSettings(lost_after=2)
    )

    def head(module, inputs, output):
        current = tracker.images.decoded - 1
        reprompted = len(tracker.seeds[1]) > 1
        return torch.full_like(output, -10.0) if current >= AWAY.start and not reprompted else output

    hook = predictor.sam_mask_decoder.pred_obj_score_head.register_forward_hook(head)
    try:
        out = list(tracker.run())
    finally:
        hook.remove()
    assert [f.index for f in out] == list(range(N_FRAMES))
    # away: lost (SAM 2's absent fill), searched every 2nd lost frame, never found
    for f in out[AWAY.start : AWAY.stop]:
        assert not f.masks[1].any() and f.scores[1] <= 0
    assert searched == [(5, False), (7, False), (9, True)]
    # back on frame 9: re-prompted there with PerSAM's mask, then tracked by SAM 2
    seeds = tracker.seeds[1]
    assert [(s.frame, s.source) for s in seeds] == [(0, "mask"), (9, "concept")] and seeds[1].prompts
    found = concept.segment(frames[9], detect_absent=True)
    x, y = seeds[1].prompts[0]["points_xy"][0]  # PerSAM's positive point: on the returned object
    assert found.present and truth[9][int(y), int(x)]
    # the frames after it: the package's predictor replaying the run (the same object-score override while the
    # object is away, PerSAM's mask added on frame 9, propagation again from there)
    torch.manual_seed(0)
    official, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    state = official.init_state(str(folder))
    official.add_new_mask(state, 0, 1, torch.from_numpy(first))
    calls = []  # one object-score evaluation per propagated frame, in order: frame len(calls)

    def official_head(module, inputs, output):
        calls.append(1)
        return torch.full_like(output, -10.0) if len(calls) >= AWAY.start else output

    hook = official.sam_mask_decoder.pred_obj_score_head.register_forward_hook(official_head)
    try:
        replay = {
            t: logits[0, 0].numpy() > 0 for t, _, logits in official.propagate_in_video(state, max_frame_num_to_track=8)
        }
    finally:
        hook.remove()
    assert sorted(replay) == list(range(9)) and len(calls) == 8, (sorted(replay), len(calls))
    official.add_new_mask(state, 9, 1, torch.from_numpy(found.mask))
    replay.update(
        {t: logits[0, 0].numpy() > 0 for t, _, logits in official.propagate_in_video(state, start_frame_idx=9)}
    )
    after = {t: iou(out[t].masks[1], replay[t]) for t in range(9, N_FRAMES)}  # 9: conditioned; 10-12: tracked
    assert sorted(after) == list(range(9, N_FRAMES)) and min(after.values()) >= 0.99, after
    for f in out[9:]:
        assert f.scores[1] > 0 and f.masks[1].any()
    assert any("found again by its concept" in note for note in tracker.notes)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--finetune"], "--finetune has no effect with --tracker sam2"),
        (["--box", "1:0,0,5,5"], "--box has no effect with --tracker sam2"),
        (["--mask", "FIRST"], "either as --mask FIRST.png or as --concept C.persam"),
        (["--model", "sam_tiny"], "--tracker sam2 runs a SAM 2 model, not 'sam_tiny'"),
        (
            ["--tracker", "persam", "--lost-after", "2"],
            "--concept and --lost-after have no effect with --tracker persam",
        ),
    ],
)
def test_options_that_do_not_apply_are_refused(tmp_path, concept_file, capsys, extra, message):
    folder, first = frame_folder(tmp_path, 2)
    extra = [str(first) if e == "FIRST" else e for e in extra]
    model = [] if "--model" in extra else ["--model", "sam2_tiny"]
    rc = main(
        [
            "video",
            str(folder),
            "--concept",
            str(concept_file),
            "--tracker",
            "sam2",
            "-o",
            str(tmp_path / "o"),
            "--random-weights",
            *model,
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_concept_of_a_trained_model_needs_its_weights(tmp_path, tiny_checkpoint, capsys):
    """A concept made with a weights file: located with --concept-checkpoint, refused in one line without it."""
    folder, first = frame_folder(tmp_path, 2)
    concept = tmp_path / "c.persam"
    assert (
        main(
            [
                "personalize",
                "--ref",
                str(folder / "00000.png"),
                "--ref-mask",
                str(first),
                "--model",
                "sam_tiny",
                "--checkpoint",
                str(tiny_checkpoint),
                "--device",
                "cpu",
                "-o",
                str(concept),
            ]
        )
        == 0
    )
    base = ["video", str(folder), "--concept", str(concept), "--tracker", "sam2", *SAM2_TINY]
    rc = main([*base, "-o", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--concept-checkpoint" in err, err
    rc = main([*base, "-o", str(tmp_path / "b"), "--concept-checkpoint", str(tiny_checkpoint)])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "b").glob("*.png"))) == 2


ENTERS = 3  # the entering clip: the object is out of the picture on frames 0..2


def test_object_that_enters_later_is_tracked_from_the_frame_it_is_found(concept_file, tmp_path):
    """No first-frame mask: PerSAM (the concept's calibrated presence check) searches every frame until the object
    is there; the frames before get empty masks, the first frame it is found on is SAM 2's conditioning frame, and
    from there the masks are the package's predictor's for that mask (run on the clip from that frame)."""
    import torch

    import persam
    from persam.session.concept_file import load_concept
    from persam.session.tracker import SamTracker, concept_locator
    from persam.session.video_predictor import load_video_predictor

    frames, truth = leaving_clip(away=range(ENTERS), count=8)
    jpg, decoded = jpeg_frames(frames, tmp_path / "jpg")
    torch.manual_seed(0)
    concept = load_concept(concept_file, persam.load("sam_tiny", random_weights=True, device="cpu"))
    torch.manual_seed(0)
    predictor, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    locate, searched = concept_locator({1: concept}), []

    def logged(oid, frame):
        found = locate(oid, frame)
        searched.append((tracker.images.decoded - 1, found is not None))
        return found

    tracker = SamTracker(predictor, iter(decoded), {}, count=len(frames), waiting={1}, find=logged)
    out = list(tracker.run())
    assert [f.index for f in out] == list(range(len(frames)))
    assert searched == [(0, False), (1, False), (2, False), (3, True)]  # searched every frame until found, then not
    for f in out[:ENTERS]:
        assert not f.labels.any() and not f.masks[1].any() and f.scores[1] == float("-inf")
    (seed,) = tracker.seeds[1]
    assert (seed.frame, seed.source) == (ENTERS, "concept") and seed.prompts
    x, y = seed.prompts[0]["points_xy"][0]
    assert truth[ENTERS][int(y), int(x)]  # PerSAM's positive point is on the object
    assert tracker.unseen == {1: ENTERS} and not tracker.waiting
    assert any(f"frame {ENTERS}: object 1 found by its concept" in note for note in tracker.notes)
    # the package's predictor on the clip from frame ENTERS, seeded there with the mask PerSAM finds
    later = tmp_path / "later"
    later.mkdir()
    for i, path in enumerate(sorted(jpg.iterdir())[ENTERS:]):
        (later / f"{i:05d}.jpg").write_bytes(path.read_bytes())
    found = concept.segment(decoded[ENTERS], detect_absent=True)
    assert found.present
    torch.manual_seed(0)
    official, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    state = official.init_state(str(later))
    official.add_new_mask(state, 0, 1, torch.from_numpy(found.mask))
    expected = {t + ENTERS: logits[0, 0].numpy() > 0 for t, _, logits in official.propagate_in_video(state)}
    assert sorted(expected) == list(range(ENTERS, len(frames)))
    # ENTERS: the conditioning frame (the input mask through SAM 2's low-resolution logits); after it: the tracking
    after = {f.index: iou(f.masks[1], expected[f.index]) for f in out[ENTERS:]}
    assert sorted(after) == list(range(ENTERS, len(frames))) and len(after) >= 4 and min(after.values()) >= 0.99
    assert all(f.masks[1].any() for f in out[ENTERS:])


@pytest.mark.parametrize("away, count", [(range(ENTERS), 5), (range(3), 3)])
def test_video_cli_waits_for_the_concept(tmp_path, concept_file, capsys, away, count):
    """``persam video --concept --detect-absent`` on a clip that starts without the object (or never shows it):
    empty masks until it is found, the seed and the frames before it in the manifest, exit 0."""
    frames, _ = leaving_clip(away=away, count=count)
    video, out = write_video(tmp_path / "clip.mp4", frames), tmp_path / "out"
    rc = main(
        [
            "video",
            str(video),
            "--concept",
            str(concept_file),
            "--tracker",
            "sam2",
            "--detect-absent",
            "-o",
            str(out),
            *SAM2_TINY,
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    labels = [np.asarray(Image.open(out / f"{i:05d}.png")) for i in range(count)]
    (obj,) = json.loads((out / "manifest.json").read_text())["objects"]
    assert captured.out.startswith(f"persam video: {count} frames of 1 object tracked by SAM 2")
    if len(away) < count:  # found on the first frame it is in
        assert [s["frame"] for s in obj["seeds"]] == [away.stop] and obj["unseen_frames"] == away.stop
        assert not any(lab.any() for lab in labels[: away.stop]) and all(lab.any() for lab in labels[away.stop :])
        assert captured.err == ""
    else:  # never there: all empty, one line on stderr
        assert obj["seeds"] == [] and obj["unseen_frames"] == count and obj["lost_frames"] == 0
        assert not any(lab.any() for lab in labels)
        assert (
            captured.err
            == f"persam: {concept_file}: not found in any of the {count} frames of {video}; its masks are empty\n"
        )


def test_only_persams_progress_bar_is_shown(tmp_path, capfd, monkeypatch):
    """On a terminal, ``persam video --tracker sam2`` shows its own bar ("video", frames), not the package's
    ("propagate in video"), and the package's bar is back for direct callers afterwards."""
    import sys

    import sam2.sam2_video_predictor as official_module

    folder, first = frame_folder(tmp_path, 3)
    bar = official_module.tqdm
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    rc = main(["video", str(folder), "--mask", str(first), "--tracker", "sam2", "-o", str(tmp_path / "o"), *SAM2_TINY])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    assert "video: 100%" in captured.err and "3/3" in captured.err  # persam's bar
    assert "propagate in video" not in captured.err and "frame loading" not in captured.err
    assert captured.out.startswith("persam video: 3 frames of 1 object tracked by SAM 2")
    assert official_module.tqdm is bar
