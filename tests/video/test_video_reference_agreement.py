"""The video session against the independent oracle of the reference's DAVIS loop.

Each frame is compared on its own: the oracle starts from persam's previous
label map (the reference's own previous map, as long as the two agree), so a
disagreement is reported on the frame where it happens. The top-k similarity
pixels come from a full-resolution bilinear map with flat stretches, where
float32 rounding decides between pixels whose values differ by 1e-9..3e-8:
when persam's points differ from the oracle's, each of persam's points must be
within ``SIM_TOL`` of the oracle's k-th best value (a near-tie, reported in
the test's output), and the oracle is then re-run from persam's points so
that the masks compare the same prompt. Any other difference fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam

import persam
import reference_oracle_video as oracle
from persam.session.video import VideoSession
from reference_oracle import ReferenceCrash

MIN_IOU = 0.99
SIM_TOL = 1e-5
WEIGHT_TOL = 0.01


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def near_tie(points: np.ndarray, result: oracle.FrameResult, sim: torch.Tensor, k: int) -> bool:
    """Whether every one of ``points`` is among the oracle map's top-k up to ``SIM_TOL``."""
    kth = float(sim.flatten().topk(k).values[-1])
    return all(float(sim[int(y), int(x)]) >= kth - SIM_TOL for x, y in points)


def run_both(clip, finetune: bool, seed: int):
    torch.manual_seed(seed)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    b = model.backend
    sam = Sam(image_encoder=b.image_encoder, prompt_encoder=b.prompt_encoder, mask_decoder=b.mask_decoder)
    first = clip.labels[0].copy()
    first[first == 1] = 0  # objects 2 and 3 stay in view (the reference crashes when one leaves)
    session = VideoSession(model, clip.frames[0], first, finetune=finetune)
    objects = oracle.first_frame(sam, clip.frames[0], first, finetune)
    return session, sam, objects, first


@pytest.mark.parametrize("finetune", [False, True], ids=["persam", "persam-f"])
# Clips on which every object keeps pixels under the random-weight model: on clip 1 object 2 vanishes at frame 2,
# where the reference crashes (it re-indexes its boxes), leaving nothing to compare.
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_every_frame_and_object_matches_the_reference(clip_factory, finetune, seed, capsys):
    clip = clip_factory(n_frames=6, seed=seed)
    session, sam, objects, previous = run_both(clip, finetune, seed)
    if finetune:
        for oid, obj in objects.items():
            np.testing.assert_allclose(session.weights[oid].numpy(), obj.weights[:, 0].numpy(), atol=WEIGHT_TOL)
    k = 1 if finetune else 2
    seen = {}
    real_prompts = session.prompts

    def prompts(encoded, boxes):
        seen.update(real_prompts(encoded, boxes))
        return seen

    session.prompts = prompts
    compared, ties = 0, []
    for index, frame in enumerate(clip.frames[1:], start=1):
        seen.clear()
        _, ours, _ = session.step(frame)
        try:
            ref = oracle.next_frame(sam, frame, objects, previous)
        except ReferenceCrash as exc:  # nothing to compare against from here on
            print(f"frame {index}: the reference would crash ({exc}); stopped comparing")
            break
        ours_points = {oid: p.points_xy[:k].numpy() for oid, p in seen.items()}
        differing = [oid for oid in objects if not np.array_equal(ours_points[oid], ref.points[oid][:k])]
        if differing:
            image = oracle.OracleImage(sam, frame)
            for oid in differing:
                sim = oracle.similarity_map(image, objects[oid].direction)
                assert near_tie(ours_points[oid], ref, sim, k), (
                    f"frame {index}, object {oid}: points {ours_points[oid].tolist()} vs reference "
                    f"{ref.points[oid][:k].tolist()} are not a near-tie (gap {ref.gaps[oid]:.3g})"
                )
                ties.append(f"frame {index} object {oid}: gap {ref.gaps[oid]:.3g}")
            ref = oracle.next_frame(sam, frame, objects, previous, points=ours_points)
        for oid in objects:
            value = iou(ours == oid, ref.labels == oid)
            assert value >= MIN_IOU, f"frame {index}, object {oid}: IoU {value:.4f} with the reference"
        compared += 1
        previous = ours
    print(f"compared {compared} frames; near-ties followed: {ties or 'none'}")
    assert compared >= 3, "too few frames compared for the test to mean anything"
