"""Personalized video object segmentation from a first-frame label map.

The reference's DAVIS protocol (``docs/persam-reference.md``, "Video"),
for several objects at once, frame by frame:

* frame 0: per object, the target direction ``(max + mean) / 2`` of its
  masked features (cells selected with the video threshold 123.675 / 215),
  L2-normalised; PerSAM-F also fits its two mask weights on frame 0;
* each later frame is encoded once; per object the prompt is the top-k
  pixels of the full-resolution similarity map (k = 2 for PerSAM, 1 for
  PerSAM-F), the object's box in the previous label map enlarged by 10 px,
  and that box's centre (all points positive);
* PerSAM: multi-mask pass with points + box, the largest of the three masks
  (pixel count at full resolution), refinement 1 with points + its
  logits, refinement 2 with points + the box of that mask + its logits
  (each multi-mask, best predicted IoU);
* PerSAM-F: weighted sum of the three masks' logits (the best-scored mask if
  that sum is empty), refinement 1 with points + its box + the weighted
  logits, refinement 2 as PerSAM;
* objects are merged by arg-max of their full-resolution logits against a
  zero background; the next prompts' boxes come from the merged label map.

Where the reference fails, this module defines the behaviour:

* boxes are keyed by object id, never re-indexed by the labels present;
* **an object that vanishes** (no pixel in the merged map) loses its box:
  its next prompt is its top-k similarity points alone (no box, no centre),
  until it has pixels again, from which frame on its box is used again;
  its score for a frame where it has no pixel is 0.0;
* **presence** (optional, ``VideoSettings.detect_absent``; off by default as
  in the reference): each object gets a presence threshold from frame 0,
  calibrated like a concept's (``persam.method.presence``: midpoint of the
  mean similarity of its own cells and the best similarity of the cells
  away from it); on a frame where its best similarity is below it, the
  object is declared absent (no pixel, score 0.0, box dropped) without
  running the decoder for it, so a vanished object does not come back as a
  false positive;
* a refinement whose input mask is empty keeps the previous stage's mask
  (no crash);
* an object covering no whole feature cell in frame 0 takes the features of
  the cells its pixels touch (noted in ``VideoSession.notes``).

Coordinates: photo pixels, (x, y) points, XYXY boxes. Label maps are (H, W)
uint8, 0 = background, any other value = object id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from persam.backends.base import EncodedImage
from persam.errors import InputError
from persam.io import ImageLike, first_frame_labels, load_image
from persam.method.decoder import PromptRecord, decode_many
from persam.method.fit import optimise
from persam.method.persam_f import fit_problems, weighted_start
from persam.method.presence import pool_stats, reference_similarities
from persam.method.prior import Box, box_centre, enlarge_box, label_boxes, topk_points
from persam.method.refine import MethodOutput, refine
from persam.method.resample import similarity_operator, upscale_logits
from persam.method.target import TargetFeatures, cell_features, object_cells
from persam.session.video_types import (
    FramePrediction,
    ObjectPrompt,
    VideoFrame,
    VideoSettings,
)

if TYPE_CHECKING:
    from persam.session.photo import PersamModel


class VideoSession:
    """Segments the objects of a first-frame label map in the following frames.

    Args:
        model: a ``persam.session.photo.PersamModel`` (``persam.load(...)``).
        first_frame: (H, W, 3) uint8 RGB frame (or any ``ImageLike``).
        first_labels: (H, W) label map of that frame, 0 = background, each
            other value an object id (a bool mask = one object, id 1).
        finetune: PerSAM-F (fit two mask weights per object on frame 0).
        settings: protocol knobs (defaults = reference).

    Raises:
        ValueError: label map size differing from the frame, no object pixel.
    """

    def __init__(
        self,
        model: PersamModel,
        first_frame: ImageLike,
        first_labels: np.ndarray,
        *,
        finetune: bool = False,
        settings: VideoSettings | None = None,
    ) -> None:
        self.model = model
        self.backend = model.backend
        self.finetune = finetune
        self.settings = settings or VideoSettings()
        frame = load_image(first_frame)
        self.hw: tuple[int, int] = (int(frame.shape[0]), int(frame.shape[1]))
        labels = first_frame_labels(first_labels, self.hw)
        self.object_ids: list[int] = [int(v) for v in np.unique(labels) if v != 0]
        self.first_labels = labels
        self.notes: list[str] = []
        self.index = 0
        encoded = self.backend.encode(frame)
        self.directions: dict[int, torch.Tensor] = {
            oid: self._direction(encoded, labels == oid, oid) for oid in self.object_ids
        }
        self._boxes: dict[int, Box | None] = label_boxes(labels, self.object_ids)
        self.thresholds: dict[int, float] = {}
        if self.settings.presence_threshold is not None:
            self.thresholds = {oid: float(self.settings.presence_threshold) for oid in self.object_ids}
        elif self.settings.detect_absent:
            self.thresholds = {oid: self._presence_threshold(encoded, labels == oid, oid) for oid in self.object_ids}
        self.weights: dict[int, torch.Tensor] = self._fit(encoded, labels) if finetune else {}

    # ------------------------------------------------------------------ set-up

    @property
    def method(self) -> str:
        return "persam-f" if self.finetune else "persam"

    @property
    def boxes(self) -> dict[int, Box | None]:
        """Object id -> tight box in the latest label map (None while the object is absent)."""
        return dict(self._boxes)

    def _direction(self, encoded: EncodedImage, mask: np.ndarray, oid: int) -> torch.Tensor:
        cells, touched = object_cells(
            torch.from_numpy(mask), encoded.geometry, self.settings.cell_threshold, allow_touched=True
        )
        if touched:
            self.notes.append(f"frame 0: object {oid} covers no whole feature cell; using the cells its pixels touch")
        return TargetFeatures.from_cells([cell_features(encoded, cells)]).direction("maxmean")

    def _presence_threshold(self, encoded: EncodedImage, mask: np.ndarray, oid: int) -> float:
        """Object ``oid``'s calibrated presence threshold on frame 0 (see the module docstring)."""
        stats = reference_similarities(
            encoded, torch.from_numpy(mask), self.directions[oid], self.settings.cell_threshold, allow_touched=True
        )
        return pool_stats([stats]).threshold

    def _fit(self, encoded: EncodedImage, labels: np.ndarray) -> dict[int, torch.Tensor]:
        """PerSAM-F's weights per object, fitted on frame 0 with frame 0's own prompt."""
        prompts = self.prompts(encoded, self._boxes)
        masks = [torch.from_numpy(labels == oid) for oid in prompts]
        problems = fit_problems(
            self.backend, encoded, [p.to_prompt(p.box_xyxy) for p in prompts.values()], masks, self.settings.fit.block
        )
        return {oid: optimise(problem, self.settings.fit) for oid, problem in zip(prompts, problems)}

    # ------------------------------------------------------------------ one frame

    def prompts(self, encoded: EncodedImage, boxes: dict[int, Box | None]) -> dict[int, ObjectPrompt]:
        """Every present object's prompt on an encoded frame, given the previous frame's tight boxes.

        Objects below their presence threshold (``thresholds``, when
        detecting absence) get no prompt: they are absent from the frame.
        """
        feats = encoded.normalized_features()
        directions = torch.stack([self.directions[oid] for oid in self.object_ids]).to(feats)
        sims = torch.einsum("kc,chw->khw", directions, feats)
        op = similarity_operator(encoded.geometry)
        k = self.settings.points(self.finetune)
        out = {}
        for oid, sim in zip(self.object_ids, sims):
            if oid in self.thresholds and float(sim.max()) < self.thresholds[oid]:
                continue
            points = topk_points(op, sim, k)
            box = boxes.get(oid)
            big = None if box is None else enlarge_box(box, self.settings.box_margin, self.hw)
            if big is not None:
                points.append(box_centre(big))
            out[oid] = ObjectPrompt(
                torch.tensor(points, dtype=torch.int64), torch.ones(len(points), dtype=torch.int64), big
            )
        return out

    def predict(self, encoded: EncodedImage, boxes: dict[int, Box | None] | None = None) -> FramePrediction:
        """Segment every object on an encoded frame; the session's state is not changed.

        Args:
            encoded: the frame's embedding (``backend.encode(frame)``).
            boxes: previous tight boxes per object id; default the session's.
        """
        prompts = self.prompts(encoded, self._boxes if boxes is None else boxes)
        final = self.segment_objects(encoded, prompts) if prompts else {}
        ids = list(final)
        labels = self._merge(encoded.geometry, ids, [final[oid].low_res_logits for oid in ids])
        boxes_now = label_boxes(labels, self.object_ids)
        scores = {
            oid: (final[oid].score if oid in final and boxes_now[oid] is not None else 0.0) for oid in self.object_ids
        }
        return FramePrediction(labels=labels, scores=scores, boxes=boxes_now, prompts=prompts)

    def segment_objects(self, encoded: EncodedImage, prompts: dict[int, ObjectPrompt]) -> dict[int, MethodOutput]:
        """Each object's final mask (low-res logits, predicted IoU, prompts), all objects batched per stage.

        The first pass (points + enlarged box, multi-mask) starts PerSAM-F from
        its weighted mask and box, PerSAM from the largest of the three masks;
        both then share the refinement cascade (``persam.method.refine``).
        """
        ids = list(prompts)
        first_prompts = [prompts[oid].to_prompt(prompts[oid].box_xyxy) for oid in ids]
        first = decode_many(self.backend, encoded, first_prompts, multimask=True)
        starts: list[MethodOutput] = []
        boxes: list[Box | None] = []
        for oid, prompt, out in zip(ids, first_prompts, first):
            if self.finetune:
                start, box = weighted_start(out, self.weights[oid], prompt, encoded)
            else:  # the truly largest of the three masks, counted at full resolution
                counts = (upscale_logits(out.low_res_logits, encoded.geometry) > 0).flatten(1).sum(1)
                k = int(torch.argmax(counts))
                start, box = (
                    MethodOutput(
                        out.low_res_logits[k],
                        float(out.iou[k]),
                        prompts[oid].points_xy,
                        prompts[oid].labels,
                        prompts[oid].box_xyxy,
                        prompts=[PromptRecord.of(prompt)],
                    ),
                    None,
                )
            starts.append(start)
            boxes.append(box)
        return dict(zip(ids, refine(self.backend, encoded, starts, boxes, box_first=self.finetune)))

    def _merge(self, geometry, ids: list[int], logits: list[torch.Tensor]) -> np.ndarray:
        """Arg-max of the objects' full-resolution logits against a zero background (first wins ties)."""
        best = torch.zeros(self.hw, dtype=torch.float32)
        labels = torch.zeros(self.hw, dtype=torch.uint8)
        for oid, low in zip(ids, logits):
            full = upscale_logits(low[None], geometry)[0].cpu()
            win = full > best
            labels[win] = oid
            best = torch.where(win, full, best)
        return labels.numpy()

    # ------------------------------------------------------------------ stream

    def step(self, frame: ImageLike | EncodedImage) -> VideoFrame:
        """Segment the next frame (encoded once) and move the boxes on."""
        index = self.index + 1
        if isinstance(frame, EncodedImage):
            encoded = frame
            hw = encoded.geometry.original_hw
        else:
            pixels = load_image(frame)
            hw = pixels.shape[:2]
        if tuple(hw) != self.hw:
            raise InputError(
                f"frame {index} is {hw[1]}x{hw[0]} but the first frame is {self.hw[1]}x{self.hw[0]}; "
                "all frames of a video must have one size"
            )
        if not isinstance(frame, EncodedImage):
            encoded = self.backend.encode(pixels)
        pred = self.predict(encoded)
        for oid in self.object_ids:
            was, now = self._boxes[oid], pred.boxes[oid]
            if was is not None and now is None:
                if oid not in pred.prompts:
                    self.notes.append(
                        f"frame {index}: object {oid} absent (best similarity below its presence threshold)"
                    )
                else:
                    self.notes.append(
                        f"frame {index}: object {oid} vanished; searching it by its similarity points alone"
                    )
            elif was is None and now is not None:
                self.notes.append(f"frame {index}: object {oid} is back")
        self._boxes = pred.boxes
        self.index = index
        return VideoFrame(index, pred.labels, pred.scores)

    def resume(self, index: int, labels: np.ndarray) -> None:
        """Go on after frame ``index`` (>= 1), whose (H, W) label map an earlier run wrote: the next
        ``step`` segments frame ``index + 1`` as an uninterrupted run would (a frame hands the next only its
        label map's boxes)."""
        if index < 1 or tuple(labels.shape) != self.hw:
            raise ValueError(f"cannot resume after frame {index} from a {labels.shape} label map of a {self.hw} video")
        self._boxes = label_boxes(labels, self.object_ids)
        self.index = index

    def run(self, frames: Iterable[ImageLike]) -> Iterator[VideoFrame]:
        """Yield frame 0 (the given label map, unless resumed) then each later frame, one at a time."""
        if self.index == 0:
            yield VideoFrame(0, self.first_labels.copy(), {oid: 1.0 for oid in self.object_ids})
        for frame in frames:
            yield self.step(frame)


def segment_video(
    model: PersamModel,
    first_frame: ImageLike,
    first_labels: np.ndarray,
    frames: Iterable[ImageLike],
    *,
    finetune: bool = False,
    settings: VideoSettings | None = None,
) -> Iterator[VideoFrame]:
    """Segment a video frame by frame (see ``VideoSession``).

    The session is set up at once (frame 0 encoded, PerSAM-F fitted, input
    errors raised here); the returned generator then yields frame 0 and each
    frame of ``frames`` (the later frames) as it is pulled, so frames are
    never all held in memory.

    Returns:
        Iterator of ``VideoFrame(index, labels, scores)``.
    """
    session = VideoSession(model, first_frame, first_labels, finetune=finetune, settings=settings)
    return session.run(frames)
