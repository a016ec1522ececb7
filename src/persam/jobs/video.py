"""Writing a segmented video: one label-map PNG per frame and, optionally, the overlay video.

Shared by ``persam video`` and the web app's Video tab.

Resuming (``persam video``, when ``write_video`` is given the run's
settings): ``OUT/manifest.json`` records the settings that decide the masks
and how many leading frames (``00000.png`` ...) are finished; it is rewritten
atomically as frames finish (at most about once a second) and when the run
ends or fails. The same command again, after a kill or Ctrl-C, keeps those
frames and segments on from the first missing one. That is exact: the only
thing one frame hands the next is the boxes of its label map
(``VideoSession.resume``), read back from the last finished PNG. Other
settings, or no manifest, start from frame 0. A hard kill can lose the
frames of its last second; they are segmented again. The manifest is
written after the frames it counts, never before.

Ctrl-C (``stop``, set by ``persam.engine.interrupt`` in the command): the
frame being segmented is finished and written, the manifest records it, and
``KeyboardInterrupt`` ends the run; a second Ctrl-C interrupts that frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persam.io import atomic_write_json, read_label_map, remove_stale_temps, save_label_map
from persam.io.frames import FrameSource, OverlayWriter, tint
from persam.jobs.manifest import Pacer, finished_frames
from persam.jobs.outputs import MANIFEST
from persam.session.video import VideoSession


@dataclass(frozen=True)
class WrittenVideo:
    """What ``write_video`` left in the masks folder.

    Attributes:
        frames: label maps there now, in order from ``00000.png``.
        reused: of them, frames an earlier run of the same settings had finished (not segmented again).
    """

    frames: int
    reused: int = 0


def run_settings(source: FrameSource, session: VideoSession) -> dict:
    """What decides the masks (the manifest's "settings"): the frames' bytes, the first frame's label map,
    the method and its knobs, the model. A later run resumes only if these are equal."""
    from persam.io import file_sha256

    frames = [[p.name, file_sha256(p)] for p in source.files] if source.files else file_sha256(source.path)
    backend = session.backend
    settings = {
        "frames": frames,
        "first_labels_sha256": hashlib.sha256(np.ascontiguousarray(session.first_labels)).hexdigest(),
        "method": session.method,
        "video_settings": dataclasses.asdict(session.settings),
        "model": backend.name,
        "checkpoint_sha256": backend.checkpoint_sha256,
        "precision": backend.precision,
        "runtime": backend.runtime,
    }
    return json.loads(json.dumps(settings))


def write_video(
    session: VideoSession,
    first: np.ndarray,
    frames: Iterable[np.ndarray],
    masks_dir: Path,
    overlay: OverlayWriter | None = None,
    wrap: Callable[[Iterator], Iterator] = lambda items: items,
    settings: dict | None = None,
    stop: threading.Event | None = None,
) -> WrittenVideo:
    """Segment ``frames`` (the frames after ``first``) and write ``masks_dir/00000.png``, ... as they come.

    Args:
        session: the video session set up on ``first`` (not stepped yet).
        first: (H, W, 3) uint8 first frame (for the overlay of frame 0).
        frames: the later frames, pulled one at a time.
        masks_dir: folder of the DAVIS palette PNGs.
        overlay: the overlay video writer, closed at the end (aborted on any error).
        wrap: wraps the ``(index, labels, scores)`` stream of the frames segmented (a progress bar).
        settings: ``run_settings(...)`` to keep ``masks_dir/manifest.json`` and resume an earlier run
            of the same settings (module docstring); None: no manifest, every frame segmented.
        stop: once set (a first Ctrl-C), the frame being segmented is the last: it is written and
            recorded, then ``KeyboardInterrupt`` is raised.

    Returns:
        The frames written (and reused).
    """
    frames = iter(frames)
    reused = 0
    if settings is not None:
        # what a kill inside an atomic write left there (not this run's own overlay video, if it goes there)
        remove_stale_temps([masks_dir], keep=[overlay.temp] if overlay is not None else [])
        reused = finished_frames(masks_dir, settings)
    state = {"count": 0, "complete": False}

    def write() -> None:
        payload = {"command": "video", "settings": settings, "frames": state["count"], "complete": state["complete"]}
        atomic_write_json(masks_dir / MANIFEST, payload)

    pacer = Pacer(write)

    def record(count: int, complete: bool, now: bool = True) -> None:
        if settings is None:
            return
        state["count"], state["complete"] = count, complete
        pacer(now)

    shown = {"frame": first}

    def remembered() -> Iterator[np.ndarray]:
        for frame in frames:
            shown["frame"] = frame
            yield frame

    written = 0
    try:
        if reused < 2:  # frame 0 is the given label map: nothing to gain
            reused = 0
        record(reused, complete=False)
        if reused:
            written = _replay(session, first, frames, masks_dir, overlay, reused)
        for index, frame_labels, _ in wrap(session.run(remembered())):
            save_label_map(masks_dir / f"{index:05d}.png", frame_labels)
            if overlay is not None:
                overlay.write(tint(shown["frame"], frame_labels))
            written = index + 1
            record(written, complete=False, now=False)
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
    except BaseException:
        if overlay is not None:
            overlay.abort()
        try:
            record(written, complete=False)
        except OSError:  # the folder went away or filled up: the error being raised says so
            pass
        raise
    if overlay is not None:
        overlay.close()
    record(written, complete=True)
    return WrittenVideo(written, reused)


def _replay(
    session: VideoSession,
    first: np.ndarray,
    frames: Iterator[np.ndarray],
    masks_dir: Path,
    overlay: OverlayWriter | None,
    count: int,
) -> int:
    """Pass over the ``count`` finished frames (decoded for the overlay only) and resume the session after them."""
    labels = read_label_map(masks_dir / "00000.png")
    if overlay is not None:
        overlay.write(tint(first, labels))
    done = 1
    for index in range(1, count):
        frame = next(frames, None)
        if frame is None:
            break
        labels = read_label_map(masks_dir / f"{index:05d}.png")
        if overlay is not None:
            overlay.write(tint(frame, labels))
        done = index + 1
    if done > 1:  # else the video lost its later frames since: segment on from frame 0's labels
        session.resume(done - 1, labels)
    return done
