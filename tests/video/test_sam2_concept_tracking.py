"""``persam video --tracker sam2 --concept``: PerSAM finds the object (no first-frame mask), SAM 2 tracks it,
and PerSAM finds it again after SAM 2 lost it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam.cli.main import main
from persam.jobs.synthetic import tiled_texture

pytest.importorskip("sam2")
av = pytest.importorskip("av")

H, W = 96, 128
AWAY = range(4, 9)  # frames where the object is out of the picture
N_FRAMES = 13
SAM2_TINY = ["--model", "sam2_tiny", "--random-weights", "--device", "cpu"]


def leaving_clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A red square drifting right; gone on frames 4..8, back from frame 9. Frames and (H, W) bool masks."""
    background = tiled_texture((H, W), np.random.default_rng(5), tile=8, low=70, high=160)
    yy, xx = np.mgrid[0:H, 0:W]
    frames, masks = [], []
    for t in range(N_FRAMES):
        frame = background.copy()
        x0 = 30 + 2 * t
        mask = (yy >= 30) & (yy < 62) & (xx >= x0) & (xx < x0 + 32) & (t not in AWAY)
        frame[mask] = (220, 40, 40)
        frames.append(frame)
        masks.append(mask)
    return frames, masks


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def concept_file(tmp_path_factory) -> Path:
    """A concept made by ``persam personalize`` on the tiny SAM from frame 0 of the clip (presence calibrated)."""
    root = tmp_path_factory.mktemp("concept")
    frames, masks = leaving_clip()
    Image.fromarray(frames[0]).save(root / "ref.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(root / "ref_mask.png")
    out = root / "dog.persam"
    rc = main(["personalize", "--ref", str(root / "ref.png"), "--ref-mask", str(root / "ref_mask.png"),
               "--model", "sam_tiny", "--random-weights", "--device", "cpu", "-o", str(out)])
    assert rc == 0
    return out


def test_video_from_a_concept_with_no_first_frame_mask(tmp_path, concept_file, capsys):
    frames, _ = leaving_clip()
    video = tmp_path / "clip.mp4"
    write_video(video, frames[:4])
    out, overlay = tmp_path / "out", tmp_path / "out.mp4"
    rc = main(["video", str(video), "--concept", str(concept_file), "--tracker", "sam2", "-o", str(out),
               "--overlay-video", str(overlay), *SAM2_TINY])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(4)]
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    (obj,) = manifest["objects"]
    (seed,) = obj["seeds"]
    assert seed["frame"] == 0 and seed["source"] == "concept"
    assert seed["prompts"] and seed["prompts"][0]["points_xy"] and "box_xyxy" in seed["prompts"][0]
    # frame 0 is SAM 2's output for the mask PerSAM finds from the concept on the decoded first frame,
    # checked with the session API and the package's own predictor (its output passes SAM 2's low-res masks)
    import persam
    import torch

    from persam.io.frames import open_frames
    from persam.session.concept_file import load_concept
    from persam.backends.sam2_models import build_model

    torch.manual_seed(0)
    concept = load_concept(concept_file, persam.load("sam_tiny", random_weights=True, device="cpu"))
    first = next(iter(open_frames(video)))
    found = concept.segment(first).mask
    assert found.any()
    (tmp_path / "jpg").mkdir()
    Image.fromarray(first).save(tmp_path / "jpg" / "00000.jpg")
    torch.manual_seed(0)
    official = build_model("sam2_tiny", video=True)
    _, _, logits = official.add_new_mask(official.init_state(str(tmp_path / "jpg")), 0, 1, torch.from_numpy(found))
    assert iou(np.asarray(Image.open(out / "00000.png")) == 1, logits[0, 0].numpy() > 0) >= 0.99


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
    import persam
    import torch

    from persam.session.concept_file import load_concept
    from persam.session.tracker import SamTracker, TrackerSettings, concept_locator, load_video_predictor

    frames, truth = leaving_clip()
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
    tracker = SamTracker(predictor, iter(frames), {1: first}, count=N_FRAMES, locate=logged,
                         settings=TrackerSettings(lost_after=2))

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
    for f in out[AWAY.start:AWAY.stop]:
        assert not f.masks[1].any() and f.scores[1] <= 0
    assert searched == [(5, False), (7, False), (9, True)]
    # back on frame 9: re-prompted there with PerSAM's mask, then tracked by SAM 2
    seeds = tracker.seeds[1]
    assert [(s.frame, s.source) for s in seeds] == [(0, "mask"), (9, "concept")] and seeds[1].prompts
    found = concept.segment(frames[9], detect_absent=True)
    x, y = seeds[1].prompts[0]["points_xy"][0]  # PerSAM's positive point: on the returned object
    assert found.present and truth[9][int(y), int(x)]
    # frame 9's output is SAM 2's output for that mask as a conditioning input (the package's predictor, one frame)
    folder = tmp_path / "jpg"
    folder.mkdir()
    Image.fromarray(frames[9]).save(folder / "00000.jpg", quality=95)
    torch.manual_seed(0)
    official, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    _, _, logits = official.add_new_mask(official.init_state(str(folder)), 0, 1, torch.from_numpy(found.mask))
    assert iou(out[9].masks[1], logits[0, 0].numpy() > 0) >= 0.99
    for f in out[9:]:
        assert f.scores[1] > 0 and f.masks[1].any()
    assert any("found again by its concept" in note for note in tracker.notes)


@pytest.mark.parametrize("extra, message", [
    (["--finetune"], "--finetune has no effect with --tracker sam2"),
    (["--box", "1:0,0,5,5"], "--box has no effect with --tracker sam2"),
    (["--mask", "FIRST"], "either as --mask FIRST.png or as --concept C.persam"),
    (["--model", "sam_tiny"], "--tracker sam2 runs a SAM 2 model, not 'sam_tiny'"),
    (["--tracker", "persam", "--lost-after", "2"], "--concept and --lost-after have no effect with --tracker persam"),
])
def test_options_that_do_not_apply_are_refused(tmp_path, concept_file, capsys, extra, message):
    frames, masks = leaving_clip()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:2]):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(tmp_path / "first.png")
    extra = [str(tmp_path / "first.png") if e == "FIRST" else e for e in extra]
    model = [] if "--model" in extra else ["--model", "sam2_tiny"]
    rc = main(["video", str(folder), "--concept", str(concept_file), "--tracker", "sam2", "-o", str(tmp_path / "o"),
               "--random-weights", *model, *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_concept_of_a_trained_model_needs_its_weights(tmp_path, tiny_checkpoint, capsys):
    """A concept made with a weights file: located with --concept-checkpoint, refused in one line without it."""
    frames, masks = leaving_clip()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:2]):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(tmp_path / "m.png")
    concept = tmp_path / "c.persam"
    assert main(["personalize", "--ref", str(folder / "00000.png"), "--ref-mask", str(tmp_path / "m.png"),
                 "--model", "sam_tiny", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "-o", str(concept)]) == 0
    base = ["video", str(folder), "--concept", str(concept), "--tracker", "sam2", *SAM2_TINY]
    rc = main([*base, "-o", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--concept-checkpoint" in err, err
    rc = main([*base, "-o", str(tmp_path / "b"), "--concept-checkpoint", str(tiny_checkpoint)])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "b").glob("*.png"))) == 2
