"""Writing a segmented video: one label-map PNG per frame and, optionally, the overlay video.

Shared by ``persam video`` and the web app's Video tab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from persam.io import save_label_map
from persam.io.frames import OverlayWriter, tint
from persam.session.video import VideoSession


def write_video(session: VideoSession, first: np.ndarray, frames: Iterable[np.ndarray], masks_dir: Path,
                overlay: OverlayWriter | None = None,
                wrap: Callable[[Iterator], Iterator] = lambda items: items) -> int:
    """Segment ``frames`` (the frames after ``first``) and write ``masks_dir/00000.png``, ... as they come.

    Args:
        session: the video session set up on ``first``.
        first: (H, W, 3) uint8 first frame (for the overlay of frame 0).
        frames: the later frames, pulled one at a time.
        masks_dir: folder of the DAVIS palette PNGs.
        overlay: the overlay video writer, closed at the end (aborted on any error).
        wrap: wraps the ``(index, labels, scores)`` stream (a progress bar).

    Returns:
        The number of frames written.
    """
    shown = {"frame": first}

    def remembered() -> Iterator[np.ndarray]:
        for frame in frames:
            shown["frame"] = frame
            yield frame

    written = 0
    try:
        for index, frame_labels, _ in wrap(session.run(remembered())):
            save_label_map(masks_dir / f"{index:05d}.png", frame_labels)
            if overlay is not None:
                overlay.write(tint(shown["frame"], frame_labels))
            written += 1
    except BaseException:
        if overlay is not None:
            overlay.abort()
        raise
    if overlay is not None:
        overlay.close()
    return written
