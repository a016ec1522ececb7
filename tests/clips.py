"""Writing short synthetic video files for tests (PyAV; the test is skipped where ``av`` is not installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from extras import require


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, options: dict | None = None) -> Path:
    """Encode (H, W, 3) uint8 RGB ``frames`` as a yuv420p video at ``fps`` (H.264 where PyAV has it, else MPEG-4).

    ``options``: container options for ``av.open`` (e.g. ``{"movflags": "frag_keyframe"}``). Returns ``path``.
    """
    av = require("av")
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
