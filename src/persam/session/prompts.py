"""SAM's own prompt-to-mask on an encoded photo: clicks or a box in, a mask out.

This is how a reference mask is made from a click instead of a mask file: the
decoder runs on the photo's cached embedding (no second encoding), with the
prompts SAM was trained on.

* a box (with or without points): SAM's single-mask output (token 0), as its
  predictor with ``multimask_output=False``;
* points only: the multi-mask output's mask of highest predicted IoU, SAM's
  advice for an ambiguous click.

Coordinates are photo pixels: points (x, y) with x right and y down, boxes
XYXY; labels 1 = foreground (positive click), 0 = background (negative click).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from persam.backends.base import Backend, EncodedImage
from persam.errors import OptionsError, PersamError
from persam.method.decoder import Prompt, decode
from persam.method.resample import upscale_logits


@dataclass(frozen=True)
class Prompts:
    """Checked prompts for one photo, in photo pixels.

    Attributes:
        points_xy: (N, 2) float64 (x, y) pixels; N may be 0.
        point_labels: (N,) int64, 1 = foreground, 0 = background.
        box_xyxy: (4,) float64 XYXY pixels, or None.
    """

    points_xy: np.ndarray
    point_labels: np.ndarray
    box_xyxy: np.ndarray | None

    @classmethod
    def checked(
        cls,
        original_hw: tuple[int, int],
        points_xy: Sequence[Sequence[float]] | np.ndarray | None = None,
        point_labels: Sequence[int] | np.ndarray | None = None,
        box_xyxy: Sequence[float] | np.ndarray | None = None,
    ) -> Prompts:
        """Validate user prompts against a photo of size ``original_hw`` = (H, W).

        ``point_labels`` defaults to all foreground.

        Raises:
            ValueError: no prompt, malformed arrays, labels other than 0/1, a
                point outside the photo, an empty or inverted box.
        """
        h, w = original_hw
        points = np.zeros((0, 2)) if points_xy is None else np.asarray(points_xy, dtype=np.float64)
        if points.size == 0:
            points = np.zeros((0, 2))
        if points.ndim != 2 or points.shape[1] != 2:
            raise OptionsError(f"points must be (x, y) pairs, got an array of shape {points.shape}")
        if point_labels is None:
            labels = np.ones(len(points), dtype=np.int64)
        else:
            labels = np.asarray(point_labels).reshape(-1)
            if len(labels) != len(points):
                raise OptionsError(
                    f"got {len(points)} points and {len(labels)} labels; pass one label (1 or 0) per point"
                )
            if not np.isin(labels, (0, 1)).all():
                raise OptionsError(
                    f"point labels must be 1 (object) or 0 (background), got {sorted(set(labels.tolist()))}"
                )
            labels = labels.astype(np.int64)
        for x, y in points:
            if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < w and 0 <= y < h):
                raise OptionsError(
                    f"point ({x:g}, {y:g}) is outside the {w}x{h} photo; use x in 0..{w - 1}, y in 0..{h - 1}"
                )
        box = None
        if box_xyxy is not None:
            box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
            if box.shape != (4,):
                raise OptionsError(f"a box is four numbers X0,Y0,X1,Y1, got {box.size}")
            x0, y0, x1, y1 = box
            if not np.isfinite(box).all() or min(x0, y0) < 0 or x1 > w or y1 > h:
                raise OptionsError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {w}x{h} photo; keep 0 <= X <= {w}, 0 "
                    f"<= Y <= {h}"
                )
            if x1 <= x0 or y1 <= y0:
                raise OptionsError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty; pass the top-left corner, then the "
                    "bottom-right one"
                )
        if box is None and len(points) == 0:
            raise OptionsError("no prompt: pass at least one point or a box")
        if box is None and not (labels == 1).any():
            raise OptionsError("only negative points: click the object at least once (or pass a box)")
        return cls(points_xy=points, point_labels=labels, box_xyxy=box)

    def to_decoder(self) -> Prompt:
        """The decoder's tensor prompt (float32, photo pixels)."""
        points = labels = None
        if len(self.points_xy):
            points = torch.as_tensor(self.points_xy, dtype=torch.float32)
            labels = torch.as_tensor(self.point_labels, dtype=torch.int64)
        box = None if self.box_xyxy is None else torch.as_tensor(self.box_xyxy, dtype=torch.float32)
        return Prompt(points_xy=points, labels=labels, box_xyxy=box)


@dataclass(frozen=True)
class PromptMask:
    """SAM's mask for some prompts.

    Attributes:
        mask: (H, W) bool, photo pixels.
        score: the decoder's predicted IoU of that mask.
        low_res_logits: (4h, 4w) float32 logits.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray


def mask_from_prompts(backend: Backend, encoded: EncodedImage, prompts: Prompts) -> PromptMask:
    """One decoder pass on ``encoded``: a box (+ points) -> single mask; points -> best of three.

    Args:
        backend: the frozen model.
        encoded: the photo's embedding and geometry (not re-encoded here).
        prompts: checked prompts (``Prompts.checked``) in photo pixels.
    """
    multimask = prompts.box_xyxy is None
    out = decode(backend, encoded, prompts.to_decoder(), multimask=multimask)
    logits, score = out.best()
    full = upscale_logits(logits[None], encoded.geometry)[0]
    return PromptMask(mask=(full > 0).cpu().numpy(), score=score, low_res_logits=logits.float().cpu().numpy())


def labels_from_prompts(model, frame, objects: dict[int, dict]) -> np.ndarray:
    """(H, W) uint8 label map of several objects, each made by SAM from its prompts on one photo.

    Args:
        model: a ``persam.session.photo.PersamModel`` (the photo is encoded once).
        frame: the photo (e.g. a video's first frame), anything ``model.encode`` takes.
        objects: object id (1..255) -> ``mask_from_prompts`` keywords
            (``points_xy``, ``point_labels``, ``box_xyxy``).

    Where masks overlap, the lower id keeps the pixel.

    Raises:
        ValueError: an id outside 1..255, bad prompts (named by object), or an
            object whose mask comes out empty.
    """
    encoded = model.encode(frame)
    labels = np.zeros(encoded.geometry.original_hw, dtype=np.uint8)
    for oid in sorted(objects, reverse=True):
        if not 1 <= oid <= 255:
            raise OptionsError(f"object id {oid} is outside 1..255; number the objects 1, 2, ...")
        try:
            mask = model.mask_from_prompts(encoded, **objects[oid]).mask
        except PersamError as exc:
            raise exc.reworded(f"object {oid}: {exc}") from None
        if not mask.any():
            raise OptionsError(f"object {oid}: SAM's mask for its prompts is empty; click inside the object or box it")
        labels[mask] = oid
    return labels
