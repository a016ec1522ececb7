"""Frames of a clip for SAM 2's video predictor, decoded on demand (the predictor's ``init_state`` loads them all).

``StreamedFrames`` is an indexable of (3, S, S) model inputs made as the
``sam2`` package's JPEG loader makes them (PIL resize to S x S, /255,
ImageNet mean / std), decoded from a forward stream with a few recent frames
kept; ``new_inference_state`` builds the predictor's inference state around it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from persam.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: Normalisation of the package's frame loader (ImageNet mean / std, on 0..1 pixels).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
#: ``num_frames`` given to the predictor when a video does not say how many frames it has.
UNKNOWN_FRAME_COUNT = 1_000_000


class FramesEnded(IndexError):
    """The stream ended before the frame the predictor asked for."""


class StreamedFrames:
    """The frames of a forward stream as an indexable of (3, S, S) float32 model inputs.

    The predictor asks for frame ``i`` once per new frame (it caches the
    features of the latest one); frames are decoded in order and the
    ``keep`` most recent are held (RGB and model input).

    Args:
        frames: (H, W, 3) uint8 RGB frames, frame 0 first.
        size: the model's square input side S.
        count: frames in the clip (``len``); None = unknown (``UNKNOWN_FRAME_COUNT``).
        keep: recent frames held.
    """

    def __init__(self, frames: Iterable[np.ndarray], size: int, count: int | None = None, keep: int = 3) -> None:
        self._it = iter(frames)
        self.size = int(size)
        self.count = UNKNOWN_FRAME_COUNT if count is None else int(count)
        self.keep = max(1, int(keep))
        self.decoded = 0
        self.hw: tuple[int, int] | None = None
        self._cache: OrderedDict[int, tuple[np.ndarray, torch.Tensor]] = OrderedDict()
        self._mean = torch.tensor(_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return self.count

    def _load(self, index: int) -> tuple[np.ndarray, torch.Tensor]:
        if index in self._cache:
            return self._cache[index]
        if index < self.decoded:
            raise ValueError(f"frame {index} was decoded and dropped already (only the {self.keep} latest are kept)")
        from PIL import Image

        while self.decoded <= index:
            rgb = next(self._it, None)
            if rgb is None:
                raise FramesEnded(f"the video ended after {self.decoded} frames")
            hw = (int(rgb.shape[0]), int(rgb.shape[1]))
            if self.hw is None:
                self.hw = hw
            elif hw != self.hw:
                raise InputError(
                    f"frame {self.decoded} is {hw[1]}x{hw[0]} but the first frame is "
                    f"{self.hw[1]}x{self.hw[0]}; all frames of a video must have one size"
                )
            pixels = np.asarray(Image.fromarray(rgb).resize((self.size, self.size))) / 255.0
            image = (torch.from_numpy(pixels).permute(2, 0, 1).float() - self._mean) / self._std
            self._cache[self.decoded] = (rgb, image)
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
            self.decoded += 1
        return self._cache[index]

    def __getitem__(self, index: int) -> torch.Tensor:
        """(3, S, S) normalised model input of frame ``index`` (decoding up to it)."""
        return self._load(int(index))[1]

    def rgb(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 frame ``index`` (decoding up to it)."""
        return self._load(int(index))[0]


def new_inference_state(predictor: nn.Module, images: StreamedFrames) -> dict:
    """An inference state for ``predictor`` over streamed frames: the fields ``init_state`` fills, frames lazy.

    ``init_state`` (sam2 1.1.0) loads the clip eagerly; this gives the same
    dictionary with ``images`` = ``images`` (tests check the keys against
    ``init_state``'s). Frame 0 is decoded here for the video size; its
    features are computed on the first ``add_new_mask``.
    """
    from collections import OrderedDict as Ordered

    images.rgb(0)
    height, width = images.hw
    device = predictor.device
    return {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": Ordered(),
        "obj_idx_to_id": Ordered(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
