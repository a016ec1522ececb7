"""The first frame of a video or folder: a source that decodes none is one line naming it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from persam.errors import InputError
from persam.io.frames import FrameSource, first_frame, open_frames


def test_the_first_frame_and_the_rest(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 10, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i:05d}.png")
    frames, first = first_frame(open_frames(tmp_path))
    assert first.shape == (8, 10, 3) and int(first.max()) == 0
    assert [int(frame.max()) for frame in frames] == [40, 80]


class Undecodable(FrameSource):
    """A video whose decoder gives no frame."""

    def __iter__(self):
        return iter(())


def test_a_source_that_decodes_no_frame_names_itself(tmp_path):
    source = Undecodable(path=tmp_path / "clip.mp4", fps=25.0, total=None)
    with pytest.raises(InputError, match=r"clip\.mp4: no frame could be decoded \(empty video\)"):
        first_frame(source)
