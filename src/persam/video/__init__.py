"""Personalized video object segmentation: a first-frame label map, then every frame.

Example::

    model = persam.load("vit_t")
    for index, labels, scores in segment_video(model, frame0, labels0, later_frames):
        ...  # labels: (H, W) uint8, 0 = background, else object id

See ``persam.video.session`` for the protocol and ``persam.video.davis`` for DAVIS 2017.
"""

from persam.video.session import (
    FramePrediction,
    ObjectPrompt,
    VideoFrame,
    VideoSession,
    VideoSettings,
    segment_video,
)

__all__ = ["FramePrediction", "ObjectPrompt", "VideoFrame", "VideoSession", "VideoSettings", "segment_video"]
