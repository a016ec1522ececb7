"""Prompts being clicked on one photo, and the photo drawn with its mask and prompts.

Coordinates are photo pixels, x right, y down. Gradio's image has no drag
box, so a box is two clicks: one corner, then the opposite corner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["object", "background", "box"]
#: Click modes as the page names them.
MODES: dict[str, Mode] = {
    "object point (+)": "object",
    "background point (-)": "background",
    "box: click two corners": "box",
}


@dataclass
class Clicks:
    """Points and at most one box on one photo.

    Attributes:
        points_xy: (x, y) photo pixels, in click order.
        labels: 1 = object, 0 = background, one per point.
        box_xyxy: the box, or None.
        corner: the box's first corner while waiting for the second, or None.
    """

    points_xy: list[tuple[int, int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box_xyxy: tuple[int, int, int, int] | None = None
    corner: tuple[int, int] | None = None
    _history: list[str] = field(default_factory=list, repr=False)

    def add(self, x: int, y: int, mode: Mode) -> bool:
        """Record a click; returns whether the prompts changed (False after a box's first corner)."""
        if mode == "box":
            if self.corner is None:
                self.corner = (x, y)
                return False
            (x0, y0), self.corner = self.corner, None
            self.box_xyxy = (min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1)  # both corner pixels inside
            self._history = [h for h in self._history if h != "box"] + ["box"]  # one box: a new one replaces it
            return True
        self.points_xy.append((x, y))
        self.labels.append(1 if mode == "object" else 0)
        self._history.append("point")
        return True

    def undo(self) -> None:
        """Forget the pending corner, else the last point or box."""
        if self.corner is not None:
            self.corner = None
        elif self._history:
            if self._history.pop() == "box":
                self.box_xyxy = None
            else:
                self.points_xy.pop()
                self.labels.pop()

    @property
    def empty(self) -> bool:
        return not self.points_xy and self.box_xyxy is None

    def prompts(self) -> dict:
        """Keyword arguments of ``PersamModel.mask_from_prompts``."""
        return {"points_xy": self.points_xy or None, "point_labels": self.labels or None, "box_xyxy": self.box_xyxy}


def draw(
    photo: np.ndarray, mask: np.ndarray | None, clicks: Clicks | None = None, labels: np.ndarray | None = None
) -> np.ndarray:
    """(H, W, 3) uint8: the photo with the mask (or a label map) tinted and the prompts marked.

    Object points green, background points red, the box (and a pending corner) yellow.
    """
    from PIL import Image, ImageDraw

    from persam.io import overlay
    from persam.io.frames import tint

    if labels is not None:
        shown = tint(photo, labels)
    elif mask is not None:
        shown = overlay(photo, mask, color=(30, 144, 255))
    else:
        shown = photo.copy()
    if clicks is None:
        return shown
    img = Image.fromarray(shown)
    pen = ImageDraw.Draw(img)
    r = max(3, round(max(photo.shape[:2]) / 120))
    if clicks.box_xyxy is not None:
        x0, y0, x1, y1 = clicks.box_xyxy
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 215, 0), width=max(2, r // 2))
    if clicks.corner is not None:
        x, y = clicks.corner
        pen.line((x - 2 * r, y, x + 2 * r, y), fill=(255, 215, 0), width=max(2, r // 2))
        pen.line((x, y - 2 * r, x, y + 2 * r), fill=(255, 215, 0), width=max(2, r // 2))
    for (x, y), label in zip(clicks.points_xy, clicks.labels):
        colour = (40, 200, 60) if label == 1 else (230, 40, 40)
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255), width=max(1, r // 3))
    return np.asarray(img)
