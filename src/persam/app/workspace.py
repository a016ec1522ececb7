"""One visitor's work in the app: the photo being clicked, the references kept, the concept learned.

Plain functions over a ``Workspace`` and the shared ``PersamModel``: no Gradio
here. User errors are ``ValueError``s whose message the page shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persam.app.clicks import Clicks, Mode, draw
from persam.app.files import display_name, read_mask, read_photo
from persam.errors import OptionsError, PersamError
from persam.session.photo import Concept, PersamModel


@dataclass
class Reference:
    """A kept reference: photo (H, W, 3) uint8, mask (H, W) bool, and its upload's name."""

    photo: np.ndarray
    mask: np.ndarray
    name: str


@dataclass
class Workspace:
    """State of one browser session.

    Attributes:
        photo: the reference photo being clicked, (H, W, 3) uint8, or None.
        name: its upload's file name.
        clicks: the prompts clicked on it.
        mask: its current mask (from the clicks, or uploaded), (H, W) bool, or None.
        references: the references kept for learning.
        concept: the concept learned (or loaded), or None.
    """

    photo: np.ndarray | None = None
    name: str = ""
    clicks: Clicks = field(default_factory=Clicks)
    mask: np.ndarray | None = None
    references: list[Reference] = field(default_factory=list)
    concept: Concept | None = None

    def view(self) -> np.ndarray | None:
        """The photo with its mask and clicks drawn (None without a photo)."""
        return None if self.photo is None else draw(self.photo, self.mask, self.clicks)

    def thumbnails(self) -> list[tuple[np.ndarray, str]]:
        """(drawn reference, caption) of the kept references."""
        return [
            (draw(r.photo, r.mask), f"{i + 1}: {r.name} ({int(r.mask.sum())} px)")
            for i, r in enumerate(self.references)
        ]


def set_photo(ws: Workspace, model: PersamModel, path: str | os.PathLike) -> str:
    """Take an uploaded reference photo and encode it now, so that clicks only run the decoder."""
    ws.photo, ws.name = read_photo(path), display_name(path)
    ws.clicks, ws.mask = Clicks(), None
    model.encode(ws.photo)
    h, w = ws.photo.shape[:2]
    return f"{ws.name}: {w}x{h}. Click the object (or draw a box with two corner clicks), or upload its mask."


def _need_photo(ws: Workspace) -> np.ndarray:
    if ws.photo is None:
        raise OptionsError("no reference photo yet; upload one first")
    return ws.photo


def _remask(ws: Workspace, model: PersamModel) -> str:
    """SAM's mask for the current clicks (decoder only: the photo's embedding is cached)."""
    photo = _need_photo(ws)
    if ws.clicks.empty:
        ws.mask = None
        return "no prompt: click the object"
    if ws.clicks.box_xyxy is None and 1 not in ws.clicks.labels:
        ws.mask = None
        return "only background points so far: click the object too (or draw a box)"
    result = model.mask_from_prompts(photo, **ws.clicks.prompts())
    ws.mask = result.mask
    return f"mask: {int(result.mask.sum())} pixels, SAM's predicted IoU {result.score:.3f}"


def click(ws: Workspace, model: PersamModel, x: int, y: int, mode: Mode) -> str:
    """A click at photo pixel (x, y): add the prompt and remake the mask."""
    photo = _need_photo(ws)
    h, w = photo.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise OptionsError(f"click ({x}, {y}) is outside the {w}x{h} photo")
    if not ws.clicks.add(int(x), int(y), mode):
        return f"box corner at ({x}, {y}): now click the opposite corner"
    return _remask(ws, model)


def undo(ws: Workspace, model: PersamModel) -> str:
    """Forget the last click and remake the mask."""
    _need_photo(ws)
    ws.clicks.undo()
    return _remask(ws, model)


def clear(ws: Workspace) -> str:
    """Forget every click and the mask."""
    ws.clicks, ws.mask = Clicks(), None
    return "prompts cleared"


def upload_mask(ws: Workspace, path: str | os.PathLike) -> str:
    """Use an uploaded mask instead of clicks."""
    photo = _need_photo(ws)
    ws.mask = read_mask(path, photo.shape[:2])
    ws.clicks = Clicks()
    return f"mask from {display_name(path)}: {int(ws.mask.sum())} pixels"


def keep_reference(ws: Workspace) -> str:
    """Keep the current photo and mask as a reference (several references make one concept)."""
    photo = _need_photo(ws)
    if ws.mask is None or not ws.mask.any():
        raise OptionsError("this photo has no mask yet; click the object or upload its mask first")
    ws.references.append(Reference(photo=photo, mask=ws.mask, name=ws.name))
    return f"{len(ws.references)} reference(s) kept"


def learn(
    ws: Workspace,
    model: PersamModel,
    *,
    finetune: bool,
    without: list[str],
    presence_threshold: float | None,
    prior: str = "similarity",
    parts: tuple[int, int] | None = None,
) -> str:
    """Learn the concept from the kept references (or, with none kept, from the current photo and mask).

    ``prior``: ``"similarity"`` (PerSAM's one point), ``"part-aware"`` (P2SAM) or ``"matcher"``
    (Matcher's DINOv2 matching; training-free, its rules in ``persam.session.options``);
    ``parts``: the (min, max) part counts the part-aware prior tries (default 1..5).
    """
    from persam.session.options import method_settings

    refs = list(ws.references)
    if not refs and ws.photo is not None and ws.mask is not None and ws.mask.any():
        refs = [Reference(photo=ws.photo, mask=ws.mask, name=ws.name)]
    if not refs:
        raise OptionsError("no reference yet: upload a photo and click the object (or upload its mask)")
    settings = method_settings(without)  # every option is checked by personalize (persam.session.options)
    concept = model.personalize(
        [r.photo for r in refs], [r.mask for r in refs], finetune=finetune, settings=settings, prior=prior, parts=parts
    )
    concept.presence_threshold = presence_threshold
    ws.concept = concept
    return describe(concept, len(refs))


def describe(concept: Concept, references: int | None = None) -> str:
    """One line about a concept."""
    source = "" if references is None else f" from {references} reference(s)"
    extra = "" if concept.weights is None else ", weights " + ", ".join(f"{w:.3f}" for w in concept.weights.tolist())
    off = concept.settings.disabled()
    prior = "" if concept.parts is None else ", part-aware prior, parts {}..{}".format(*concept.parts.parts)
    if concept.matcher is not None:
        prior = f", matcher prior ({concept.matcher.backbone})"
    return (
        f"concept ready: {concept.method}{source} on {concept.model.backend.name}{prior}, presence threshold "
        f"{concept.threshold:.4f}{extra}" + (f", without {', '.join(off)}" if off else "")
    )


def save(ws: Workspace, folder: Path) -> Path:
    """Write the concept as ``concept.persam`` under ``folder`` (a fresh folder per save)."""
    import tempfile

    from persam.session.concept_file import save_concept

    if ws.concept is None:
        raise OptionsError("no concept to save yet; learn one first")
    folder.mkdir(parents=True, exist_ok=True)
    return save_concept(ws.concept, Path(tempfile.mkdtemp(dir=folder)) / "concept.persam")


def load(ws: Workspace, model: PersamModel, path: str | os.PathLike) -> str:
    """Load an uploaded .persam concept (it must match the app's model)."""
    from persam.session.concept_file import load_concept

    try:
        ws.concept = load_concept(path, model)
    except PersamError as exc:
        raise exc.reworded(str(exc).replace(str(path), display_name(path))) from None
    return describe(ws.concept)
