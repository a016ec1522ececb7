"""The video tab's logic: a clip, objects picked on its first frame by clicks, then every frame.

Writes what ``persam video --overlay-video`` writes: a palette PNG of object
ids per frame (``00000.png``, ...; DAVIS naming), zipped, and the overlay mp4.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persam.app.clicks import Clicks, Mode, draw
from persam.app.files import display_name
from persam.errors import OptionsError, PersamError
from persam.session.photo import PersamModel

Progress = Callable[[int, int | None, str], None]


@dataclass
class VideoWork:
    """One visitor's clip.

    Attributes:
        path: the uploaded clip.
        first: its first frame, (H, W, 3) uint8.
        clicks: prompts per object id (1, 2, ...).
        masks: SAM's first-frame mask per object id, (H, W) bool.
    """

    path: Path | None = None
    first: np.ndarray | None = None
    clicks: dict[int, Clicks] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)

    def labels(self) -> np.ndarray:
        """(H, W) uint8 first-frame label map; where objects overlap, the lower id wins."""
        if self.first is None:
            raise OptionsError("no video yet; upload a clip first")
        labels = np.zeros(self.first.shape[:2], dtype=np.uint8)
        for oid in sorted(self.masks, reverse=True):
            labels[self.masks[oid]] = oid
        return labels

    def view(self, oid: int) -> np.ndarray | None:
        """The first frame with every object tinted and object ``oid``'s clicks marked."""
        if self.first is None:
            return None
        return draw(self.first, None, self.clicks.get(oid), labels=self.labels())


def open_video(vw: VideoWork, model: PersamModel, path: str | os.PathLike) -> str:
    """Decode the clip's first frame (and encode it, so that clicks only run the decoder)."""
    from persam.io.frames import open_frames

    name = display_name(path)
    try:
        source = open_frames(path)
        first = next(iter(source), None)
    except PersamError as exc:
        raise exc.reworded(str(exc).replace(str(path), name)) from None
    if first is None:
        raise OptionsError(
            f"{name}: no frame could be decoded ({source.stopped or 'empty video'}); re-encode it (e.g. H.264 mp4)"
        )
    vw.path, vw.first, vw.clicks, vw.masks = Path(path), first, {}, {}
    model.encode(first)
    total = f"{source.total} frames" if source.total else "frame count unknown"
    size = f"{first.shape[1]}x{first.shape[0]}"
    return f"{name}: {size}, {total}, {float(source.fps):.3g} fps. Click object 1 on the first frame."


def _check_id(oid: int | float | None) -> int:
    if oid is None or int(oid) != oid or not 1 <= int(oid) <= 255:
        raise OptionsError(f"object id must be a whole number 1..255, got {oid}")
    return int(oid)


def click(vw: VideoWork, model: PersamModel, oid: int, x: int, y: int, mode: Mode) -> str:
    """A click on the first frame for object ``oid``: SAM's mask for its prompts (decoder only)."""
    oid = _check_id(oid)
    if vw.first is None:
        raise OptionsError("no video yet; upload a clip first")
    h, w = vw.first.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise OptionsError(f"click ({x}, {y}) is outside the {w}x{h} frame")
    clicks = vw.clicks.setdefault(oid, Clicks())
    if not clicks.add(int(x), int(y), mode):
        return f"object {oid}: box corner at ({x}, {y}); now click the opposite corner"
    if clicks.box_xyxy is None and 1 not in clicks.labels:
        vw.masks.pop(oid, None)
        return f"object {oid}: only background points so far; click the object too"
    result = model.mask_from_prompts(vw.first, **clicks.prompts())
    vw.masks[oid] = result.mask
    return f"object {oid}: {int(result.mask.sum())} pixels (SAM's predicted IoU {result.score:.3f})"


def forget(vw: VideoWork, oid: int) -> str:
    """Drop object ``oid``'s clicks and mask."""
    oid = _check_id(oid)
    vw.clicks.pop(oid, None)
    vw.masks.pop(oid, None)
    return f"object {oid} removed"


def run(
    vw: VideoWork,
    model: PersamModel,
    *,
    finetune: bool,
    detect_absent: bool,
    workdir: Path,
    progress: Progress | None = None,
) -> tuple[Path, Path, str]:
    """Segment the picked objects through the clip: (overlay mp4, zip of label maps, summary).

    A clip that stops decoding part-way is segmented up to there; the summary says so.

    Raises:
        ValueError: no clip, or no object picked.
    """
    from persam.io.frames import OverlayWriter, open_frames
    from persam.jobs.video import write_video
    from persam.session.video import VideoSession, VideoSettings

    labels = vw.labels()
    if not labels.any():
        raise OptionsError("no object picked yet; click an object on the first frame")
    source = open_frames(vw.path)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="video-", dir=workdir))
    masks_dir = out / "masks"
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        raise OptionsError(f"{display_name(vw.path)}: no frame could be decoded any more; upload the clip again")
    session = VideoSession(model, first, labels, finetune=finetune, settings=VideoSettings(detect_absent=detect_absent))
    writer = OverlayWriter(out / "overlay.mp4", source.fps, session.hw)

    def reported(items):
        for item in items:
            if progress is not None:
                progress(item[0], source.total, f"frame {item[0] + 1}")
            yield item

    written = write_video(session, first, frames, masks_dir, writer, wrap=reported).frames
    zip_path = out / "persam-video-masks.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(masks_dir.glob("*.png")):
            archive.write(file, file.name)
    summary = f"{written} frames, objects {', '.join(map(str, session.object_ids))}, {session.method}"
    if source.stopped:
        summary += f"; stopped early: {source.stopped} (the frames decoded were segmented)"
    return out / "overlay.mp4", zip_path, summary
