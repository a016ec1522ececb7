"""Personalized tracking with SAM 2's video predictor (memory-based propagation).

The objects of the first frame (a label map, or masks PerSAM found from
saved concepts) seed the official ``sam2.SAM2VideoPredictor``
(``add_new_mask`` on frame 0); ``propagate_in_video`` then tracks them all
with its memory. This module only feeds and reads the predictor:

* **Streaming**: ``init_state`` would decode the whole clip into one tensor.
  ``SamTracker`` builds the same inference state (``new_inference_state``)
  around ``StreamedFrames``, an indexable that decodes frames from a forward
  stream on demand, resizes them as the package's JPEG loader does (PIL
  resize to S x S, /255, ImageNet mean/std) and keeps only a few recent ones.
* **Bounded state**: the predictor keeps every tracked frame's outputs
  (memory features, low-res masks, object pointer) but reads only the last
  ``num_maskmem`` frames, the conditioning frames and up to
  ``max_obj_ptrs_in_encoder`` object pointers. After each frame, outputs of
  non-conditioning frames older than ``memory_window`` are dropped (the
  default window is what the model reads, so results are unchanged).
* **Lost objects**: an object whose object-score logit is <= 0 (the predictor
  then fills its mask logits with -1024) or whose mask is empty is *lost*.
  After ``lost_after`` consecutive lost frames, if a ``locate`` function is
  given (a saved concept, ``concept_locator``), PerSAM searches the current
  frame for it; if found (presence check passed, mask not empty), the mask
  is added as a conditioning input of the predictor on that frame (with the
  predictor's ``add_all_frames_to_correct_as_cond`` on for that call, so it
  is kept as a conditioning frame and not re-tracked over) and propagation
  restarts there. A failed search waits another ``lost_after``
  frames before the next one.
* **Objects that appear later** (``waiting``): an object with no mask on
  frame 0 is searched with ``find`` (its concept) on every frame, from frame
  0, until it is found; its masks are empty before. The first frame where it
  is found becomes its conditioning frame (prompted as a re-found object is)
  and tracking of it starts there. Before any object is found the predictor
  is not run at all (it needs one prompted object).
* **Progress**: ``propagate_in_video`` wraps its frames in its own tqdm bar
  ("propagate in video", no option to turn it off); the tracker builds the
  predictor's generator with that bar off (``video_predictor.propagate``),
  so callers show their own progress alone.

Coordinates: label maps and masks (H, W) in video pixels; ids 1..255.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from persam.errors import InputError, OptionsError
from persam.session.streamed_frames import FramesEnded, StreamedFrames, new_inference_state
from persam.session.video_predictor import propagate

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from persam.session.photo import Concept


@dataclass(frozen=True)
class Located:
    """An object found by PerSAM on one frame.

    Attributes:
        mask: (H, W) bool mask in video pixels.
        prompts: the decoder passes' prompts (``PromptRecord.to_dict()``), first pass first.
    """

    mask: np.ndarray
    prompts: tuple[dict, ...] = ()


#: ``locate(object_id, rgb_frame) -> Located | None`` (None: not found).
Locate = Callable[[int, np.ndarray], "Located | None"]


def concept_locator(concepts: dict[int, Concept], *, detect_absent: bool = True) -> Locate:
    """A ``Locate`` that segments the frame with object ``id``'s concept (PerSAM on the concept's model).

    With ``detect_absent`` the concept's presence check runs first (its
    threshold: override, else calibrated); a frame below it, or an empty
    mask, is "not found".
    """

    def locate(oid: int, frame: np.ndarray) -> Located | None:
        concept = concepts.get(oid)
        if concept is None:
            return None
        result = concept.segment(frame, detect_absent=detect_absent)
        if not result.present or not result.mask.any():
            return None
        return Located(result.mask.astype(bool), tuple(record.to_dict() for record in result.prompts))

    return locate


@dataclass(frozen=True)
class TrackerSettings:
    """Knobs of ``SamTracker``.

    Attributes:
        lost_after: consecutive lost frames before PerSAM searches for the object again.
        memory_window: non-conditioning frames of per-frame outputs kept; None =
            (max(num_maskmem, max_obj_ptrs_in_encoder) + 1) x memory stride, all the model reads.
    """

    lost_after: int = 3
    memory_window: int | None = None

    def __post_init__(self) -> None:
        if self.lost_after < 1:
            raise OptionsError(f"lost_after must be at least 1, got {self.lost_after}")
        if self.memory_window is not None and self.memory_window < 1:
            raise OptionsError(f"memory_window must be at least 1, got {self.memory_window}")


@dataclass(frozen=True)
class Seed:
    """What prompted the predictor for one object on one frame.

    Attributes:
        frame: frame index.
        source: "mask" (the given first-frame label map) or "concept" (found by PerSAM).
        prompts: for "concept", the PerSAM decoder passes' prompts (photo pixels), first pass first.
    """

    frame: int
    source: str
    prompts: tuple[dict, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"frame": self.frame, "source": self.source, "prompts": [dict(p) for p in self.prompts]}


class TrackedFrame(NamedTuple):
    """One tracked frame (unpacks as ``index, labels, scores, masks``).

    Attributes:
        index: frame number, 0 = first.
        labels: (H, W) uint8 label map: arg-max of the objects' logits against a zero background.
        scores: object id -> the predictor's object-score logit (> 0: present); -inf for an object not found yet.
        masks: object id -> (H, W) bool mask (its logits > 0), before merging; empty for an object not found yet.
    """

    index: int
    labels: np.ndarray
    scores: dict[int, float]
    masks: dict[int, np.ndarray]


@dataclass
class SamTracker:
    """Tracks the objects of frame 0, and objects that appear later, through a clip with SAM 2's video predictor.

    Args:
        predictor: ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (eval mode).
        frames: the clip's (H, W, 3) uint8 RGB frames, frame 0 first, pulled as needed.
        first_masks: object id -> (H, W) bool mask on frame 0 (at least one object here or in ``waiting``).
        count: frames in the clip, if known (the predictor's ``num_frames``).
        locate: finds a lost object again (``concept_locator``); None = no re-detection.
        seeds: object id -> how its frame-0 mask was made (default "mask").
        settings: ``TrackerSettings``.
        waiting: ids of objects with no first-frame mask, searched with ``find`` on every frame from frame 0
            until found (still waiting after ``run``: never found).
        find: ``Locate`` for the waiting objects (default: ``locate``).
        unseen: object id -> frames yielded while it was waiting (filled by ``run``).
    """

    predictor: nn.Module
    frames: Iterable[np.ndarray]
    first_masks: dict[int, np.ndarray]
    count: int | None = None
    locate: Locate | None = None
    seeds: dict[int, list[Seed]] = field(default_factory=dict)
    settings: TrackerSettings = field(default_factory=TrackerSettings)
    notes: list[str] = field(default_factory=list)
    waiting: set[int] = field(default_factory=set)
    find: Locate | None = None
    unseen: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.first_masks and not self.waiting:
            raise InputError("no object to track: the first frame's mask has no object")
        self.waiting = {int(oid) for oid in self.waiting} - {int(oid) for oid in self.first_masks}
        self.find = self.find or self.locate
        if self.waiting and self.find is None:
            raise ValueError("objects with no first-frame mask need a way to find them (find or locate)")
        self.object_ids = sorted({int(oid) for oid in self.first_masks} | self.waiting)
        self.images = StreamedFrames(self.frames, int(self.predictor.image_size), self.count)
        self.state = new_inference_state(self.predictor, self.images)
        self.hw: tuple[int, int] = self.images.hw
        for oid in sorted(self.first_masks):
            mask = np.asarray(self.first_masks[oid], dtype=bool)
            if mask.shape != self.hw:
                raise InputError(
                    f"object {oid}'s mask is {mask.shape[1]}x{mask.shape[0]} but the first frame is "
                    f"{self.hw[1]}x{self.hw[0]}"
                )
            self.seeds.setdefault(int(oid), [Seed(0, "mask")])
        for oid in self.waiting:
            self.seeds[oid] = []
        self.unseen = {oid: 0 for oid in self.object_ids}
        self._lost = {oid: 0 for oid in self.object_ids}
        self._waited_through = -1  # the last frame the waiting objects were searched on
        self.window = self.settings.memory_window or self._model_window()
        self.searches = 0

    def _model_window(self) -> int:
        p = self.predictor
        reach = max(int(p.num_maskmem), int(p.max_obj_ptrs_in_encoder)) + 1
        return reach * max(1, int(p.memory_temporal_stride_for_eval))

    def rgb(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 frame ``index`` (one of the latest few)."""
        return self.images.rgb(index)

    def run(self) -> Iterator[TrackedFrame]:
        """Yield every frame's tracked objects, frame 0 first, decoding the clip as it goes."""
        frames = 0
        for frame in self._track():
            for oid in self.waiting:
                self.unseen[oid] += 1
            frames += 1
            yield frame
        for oid in sorted(self.waiting):
            self.notes.append(
                f"object {oid}: not found by its concept on any of the {frames} frames; its masks are empty"
            )

    def _track(self) -> Iterator[TrackedFrame]:
        with torch.inference_mode():
            for oid in sorted(self.first_masks):
                self._prompt(0, int(oid), np.asarray(self.first_masks[oid], dtype=bool))
        start = 0
        while True:  # before any object is found: search the waiting ones, frame by frame
            try:
                if start >= len(self.images):
                    return
                self._find_waiting(start)
            except FramesEnded:
                return
            if self.state["obj_ids"]:
                break
            yield self._empty(start)
            start += 1
        replayed = None
        while True:
            restart = None
            stream = propagate(self.predictor, self.state, start)
            try:
                for index, obj_ids, logits in stream:
                    frame = self._frame(index, obj_ids, logits)
                    if index != replayed and self._search(frame):
                        restart = index
                        break
                    self._forget(index)
                    yield frame
            except FramesEnded:
                return
            finally:
                stream.close()
            if restart is None:
                return
            start, replayed = restart, restart

    def _empty(self, index: int) -> TrackedFrame:
        """Frame ``index`` with no object found yet: empty masks, score -inf."""
        empty = np.zeros(self.hw, dtype=bool)
        return TrackedFrame(
            index,
            np.zeros(self.hw, dtype=np.uint8),
            {oid: float("-inf") for oid in self.object_ids},
            {oid: empty for oid in self.object_ids},
        )

    def _find_waiting(self, index: int) -> set[int]:
        """Search frame ``index`` for each waiting object (once per frame); prompt the ones found; their ids."""
        if index <= self._waited_through:
            return set()
        self._waited_through = index
        found = set()
        for oid in sorted(self.waiting):
            self.searches += int(index > 0)  # frame 0 is searched on every run with concepts
            located = self.find(oid, self.rgb(index))
            if located is None:
                continue
            with torch.inference_mode():
                self._prompt(index, oid, located.mask)
            self.waiting.discard(oid)
            self.seeds[oid].append(Seed(index, "concept", located.prompts))
            if index:
                self.notes.append(
                    f"frame {index}: object {oid} found by its concept (not in frames 0-{index - 1}); "
                    "SAM 2 tracks it from there"
                )
            found.add(oid)
        return found

    def _prompt(self, index: int, oid: int, mask: np.ndarray) -> None:
        """Add ``mask`` as a conditioning input of object ``oid`` on frame ``index``."""
        p = self.predictor
        as_cond = p.add_all_frames_to_correct_as_cond
        p.add_all_frames_to_correct_as_cond = True  # a re-found object conditions the frames after it
        try:
            p.add_new_mask(self.state, index, oid, torch.from_numpy(mask))
        finally:
            p.add_all_frames_to_correct_as_cond = as_cond

    def _frame(self, index: int, obj_ids: list[int], logits: torch.Tensor) -> TrackedFrame:
        """Merge the predictor's (N, 1, H, W) video-resolution logits into a ``TrackedFrame``."""
        logits = logits[:, 0].float().cpu()
        scores, masks = {}, {}
        for row, oid in enumerate(obj_ids):
            masks[int(oid)] = (logits[row] > 0).numpy()
            scores[int(oid)] = self._object_score(index, row, logits[row])
        for oid in self.object_ids:
            if oid not in masks:  # not found yet
                masks[oid], scores[oid] = np.zeros(self.hw, dtype=bool), float("-inf")
        best, winner = logits.max(dim=0)
        ids = torch.tensor([int(o) for o in obj_ids], dtype=torch.uint8)
        labels = torch.where(best > 0, ids[winner], torch.zeros((), dtype=torch.uint8)).numpy()
        return TrackedFrame(index, labels, scores, masks)

    def _object_score(self, index: int, row: int, logits: torch.Tensor) -> float:
        """The stored object-score logit of object ``row`` on frame ``index`` (its max logit if none is stored)."""
        outputs = self.state["output_dict_per_obj"][row]
        out = outputs["cond_frame_outputs"].get(index) or outputs["non_cond_frame_outputs"].get(index)
        if out is not None and out.get("object_score_logits") is not None:
            return float(out["object_score_logits"].reshape(-1)[0])
        return float(logits.max())

    def _search(self, frame: TrackedFrame) -> bool:
        """Count lost frames; search lost objects with ``locate`` and waiting ones with ``find``; True if one was
        prompted on this frame."""
        just = self._find_waiting(frame.index) if self.waiting else set()
        found = bool(just)
        for oid in self.object_ids:
            if oid in self.waiting or oid in just:  # not tracked yet, or prompted on this frame just now
                continue
            if frame.scores[oid] > 0 and frame.masks[oid].any():
                if self._lost[oid]:
                    self.notes.append(f"frame {frame.index}: object {oid} is tracked again")
                self._lost[oid] = 0
                continue
            self._lost[oid] += 1
            if self._lost[oid] == 1:
                self.notes.append(f"frame {frame.index}: object {oid} lost (object score <= 0)")
            if self.locate is None or self._lost[oid] % self.settings.lost_after:
                continue
            self.searches += 1
            located = self.locate(oid, self.rgb(frame.index))
            if located is None:
                self.notes.append(f"frame {frame.index}: object {oid} searched with its concept, not found")
                continue
            with torch.inference_mode():
                self._prompt(frame.index, oid, located.mask)
            self.seeds[oid].append(Seed(frame.index, "concept", located.prompts))
            self.notes.append(f"frame {frame.index}: object {oid} found again by its concept; SAM 2 re-prompted there")
            self._lost[oid] = 0
            found = True
        return found

    def _forget(self, index: int) -> None:
        """Drop non-conditioning outputs older than the memory window (the predictor no longer reads them)."""
        oldest = index - self.window
        for outputs in self.state["output_dict_per_obj"].values():
            stale = [t for t in outputs["non_cond_frame_outputs"] if t < oldest]
            for t in stale:
                del outputs["non_cond_frame_outputs"][t]
        for tracked in self.state["frames_tracked_per_obj"].values():
            for t in [t for t in tracked if t < oldest]:
                del tracked[t]

    def state_bytes(self) -> int:
        """Bytes of tensors held in the predictor's per-frame outputs (for memory measurements)."""
        total = 0
        for outputs in self.state["output_dict_per_obj"].values():
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for out in outputs[kind].values():
                    for value in out.values():
                        if isinstance(value, torch.Tensor):
                            total += value.numel() * value.element_size()
        return total
