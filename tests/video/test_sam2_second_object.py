"""``SamTracker``: an object given on frame 0 is tracked while a second one waits for its concept and enters later.

Object 1 (a blue square, its first-frame mask given) is on every frame;
object 2 (the red square of the concept clip) is out of the picture on
frames 0..ENTERS-1 and searched with its concept on each of them. Where it is
found, SAM 2 gets a new object after tracking has started and propagation
restarts from that frame: the official predictor's way of adding an object
mid-clip (``add_new_mask`` after ``propagate_in_video``, then
``propagate_in_video`` from that frame). Prompting both objects first and
propagating once from frame 0 is another computation: the package would
track object 2 on frames 0..ENTERS-1 from its later conditioning frame, and
those outputs would be in its memory afterwards.
"""

from __future__ import annotations

import numpy as np
import test_sam2_concept_tracking as concept_tracking
from test_sam2_concept_tracking import ENTERS, H, W, iou, jpeg_frames, leaving_clip

from extras import require

concept_file = concept_tracking.concept_file  # its module fixture: a concept of the red square (tiny SAM, calibrated)

require("sam2")

COUNT = 8  # frames in the clip
MIN_IOU = 0.99  # the same computation as the official predictor's, on another path (float differences only)


def two_object_clip() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The concept clip's red square entering on frame ``ENTERS``, plus a blue square on every frame below it.

    Returns the (H, W, 3) uint8 frames, object 1's (blue) and object 2's (red) (H, W) bool masks, per frame.
    """
    frames, red = leaving_clip(away=range(ENTERS), count=COUNT)
    yy, xx = np.mgrid[0:H, 0:W]
    blue = []
    for t, frame in enumerate(frames):
        mask = (yy >= 66) & (yy < 88) & (xx >= 8 + 2 * t) & (xx < 30 + 2 * t)
        assert not (mask & red[t]).any()  # the squares never overlap
        frame[mask] = (40, 70, 220)
        blue.append(mask)
    return frames, blue, red


def test_second_object_found_later_is_added_to_the_tracked_one(concept_file, tmp_path):
    import torch

    import persam
    from persam.session.concept_file import load_concept
    from persam.session.tracker import SamTracker, concept_locator
    from persam.session.video_predictor import load_video_predictor

    frames, blue, red = two_object_clip()
    jpg, decoded = jpeg_frames(frames, tmp_path / "jpg")
    torch.manual_seed(0)
    concept = load_concept(concept_file, persam.load("sam_tiny", random_weights=True, device="cpu"))
    locate, searched, located = concept_locator({2: concept}), [], {}

    def logged(oid, frame):
        found = locate(oid, frame)
        index = tracker.images.decoded - 1
        searched.append((oid, index, found is not None))
        if found is not None:
            located[index] = found
        return found

    torch.manual_seed(0)
    predictor, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    tracker = SamTracker(predictor, iter(decoded), {1: blue[0]}, count=COUNT, waiting={2}, find=logged)
    out = list(tracker.run())

    assert [f.index for f in out] == list(range(COUNT))  # each frame once, in order (frame ENTERS is replayed)
    # object 2 searched on every frame until found (frame 0 once), then no more; object 1 never searched
    assert searched == [(2, t, t == ENTERS) for t in range(ENTERS + 1)] and tracker.searches == ENTERS
    (seed,) = tracker.seeds[2]
    assert (seed.frame, seed.source) == (ENTERS, "concept") and seed.prompts
    x, y = seed.prompts[0]["points_xy"][0]
    assert red[ENTERS][int(y), int(x)]  # PerSAM's positive point is on the red square
    assert [(s.frame, s.source) for s in tracker.seeds[1]] == [(0, "mask")]
    assert tracker.unseen == {1: 0, 2: ENTERS} and not tracker.waiting  # every object has an entry; 1 was never waiting
    assert any(f"frame {ENTERS}: object 2 found by its concept" in note for note in tracker.notes)
    for f in out[:ENTERS]:
        assert not f.masks[2].any() and f.scores[2] == float("-inf") and not (f.labels == 2).any(), f.index
    for f in out[ENTERS:]:
        assert f.masks[2].any(), f.index

    # before object 2 is found, object 1 is what a tracker of object 1 alone gives
    torch.manual_seed(0)
    alone_predictor, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    alone = list(SamTracker(alone_predictor, iter(decoded[:ENTERS]), {1: blue[0]}, count=ENTERS).run())
    assert [f.index for f in alone] == list(range(ENTERS))
    alone_ious = [iou(f.masks[1], a.masks[1]) for f, a in zip(out, alone)]
    assert min(alone_ious) >= MIN_IOU, alone_ious

    # the package's predictor: object 1 tracked up to frame ENTERS, object 2 added there with the mask PerSAM found,
    # propagation again from that frame
    torch.manual_seed(0)
    official, _ = load_video_predictor("sam2_tiny", random_weights=True, device="cpu")
    state = official.init_state(str(jpg))
    official.add_new_mask(state, 0, 1, torch.from_numpy(blue[0]))
    expected = {}
    for t, ids, logits in official.propagate_in_video(state, max_frame_num_to_track=ENTERS):
        expected[t] = {int(oid): logits[row, 0].numpy() > 0 for row, oid in enumerate(ids)}
    official.add_new_mask(state, ENTERS, 2, torch.from_numpy(located[ENTERS].mask))
    for t, ids, logits in official.propagate_in_video(state, start_frame_idx=ENTERS):
        expected[t] = {int(oid): logits[row, 0].numpy() > 0 for row, oid in enumerate(ids)}
    assert sorted(expected) == list(range(COUNT))
    assert [sorted(expected[t]) for t in range(COUNT)] == [[1]] * ENTERS + [[1, 2]] * (COUNT - ENTERS)
    official_ious = {(t, oid): iou(out[t].masks[oid], mask) for t in expected for oid, mask in expected[t].items()}
    assert min(official_ious.values()) >= MIN_IOU, official_ious
