"""Video input and output: frame folders, video files (PyAV), label maps, overlay videos.

Frames are (H, W, 3) uint8 RGB arrays, produced one at a time. Video files
are decoded with PyAV (``pip install 'persam[video]'``), imported only when a
video is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from persam.errors import InputError, MissingExtraError, MissingInputError
from persam.io.atomic import PendingFile
from persam.io.images import DECODE_ERRORS, IMAGE_EXTENSIONS, load_image, open_image
from persam.io.masks import davis_palette

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv"})
#: Frame rate of the overlay video made from a folder of frames.
FOLDER_FPS = Fraction(25)
#: Exif orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


def _import_av():
    try:
        import av
    except ImportError:
        raise MissingExtraError(
            "reading and writing videos needs PyAV; install it with: pip install 'persam[video]'"
        ) from None
    return av


@dataclass
class FrameSource:
    """Frames of a folder or a video file, decoded lazily in order.

    Attributes:
        path: the folder or file.
        fps: frame rate (the container's average rate; 25 for folders).
        total: number of frames if known (folders; videos whose container says), else None.
        files: the frame files of a folder (sorted by name), empty for videos.
        decoded: frames produced so far.
        stopped: why decoding stopped before the end, or None (video files only;
            set once the iteration has ended).
    """

    path: Path
    fps: Fraction
    total: int | None
    files: list[Path] = field(default_factory=list)
    decoded: int = 0
    stopped: str | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.files:
            yield from self._folder()
        else:
            yield from self._video()

    def _folder(self) -> Iterator[np.ndarray]:
        for path in self.files:
            frame = load_image(path)
            self.decoded += 1
            yield frame

    def _video(self) -> Iterator[np.ndarray]:
        av = _import_av()
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise InputError(
                f"{self.path}: not a readable video ({exc.__class__.__name__}); "
                "pass an mp4/mov/webm/avi/mkv file or a folder of frames"
            ) from None
        with container:
            stream = container.streams.video[0]
            expected = _expected_frames(container, stream, self.fps)
            try:
                for frame in container.decode(stream):
                    rgb = frame.to_ndarray(format="rgb24")
                    self.decoded += 1
                    yield rgb
            except av.FFmpegError as exc:
                self.stopped = f"decoding failed after {self.decoded} frames ({exc.__class__.__name__})"
                return
        if expected is not None and self.decoded < expected[1]:
            self.stopped = (
                f"the video ends after {self.decoded} of the {expected[0]} frames its {expected[2]} announces"
            )


def _expected_frames(container, stream, fps: Fraction) -> tuple[int, int, str] | None:
    """(announced frames, fewest acceptable, where announced): the header's count, else duration x rate.

    A duration-based count is an estimate (variable frame rates), so only a
    shortfall of more than 10 % counts as truncation there.
    """
    if stream.frames:
        return int(stream.frames), int(stream.frames), "header"
    if container.duration and fps:
        estimate = int(round(container.duration / 1_000_000 * fps))
        return (estimate, int(estimate * 0.9) - 1, "duration") if estimate > 10 else None
    return None


def first_frame(source: FrameSource) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """(an iterator over the frames after the first, the first frame) of ``source``.

    Raises:
        InputError: not even the first frame could be decoded.
    """
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        raise InputError(
            f"{source.path}: no frame could be decoded ({source.stopped or 'empty video'}); "
            "re-encode the video or pass a folder of frames",
            path=source.path,
        )
    return frames, first


def open_frames(path: str | os.PathLike) -> FrameSource:
    """Open a folder of frames or a video file.

    A folder's frames are its image files (``persam.io.IMAGE_EXTENSIONS``,
    hidden files skipped, no sub-folders) sorted by name; their sizes are
    checked up front (headers only).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: no frames, frames of mixed sizes, not a video file, unreadable video.
    """
    source = Path(path)
    if source.is_dir():
        files = sorted(
            p
            for p in source.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise InputError(
                f"{source}: no image files in the folder; put the frames there as 00000.jpg, 00001.jpg, ..."
            )
        _check_sizes(files)
        return FrameSource(path=source, fps=FOLDER_FPS, total=len(files), files=files)
    if not source.exists():
        raise MissingInputError(f"{source}: no such file or folder; pass a video file or a folder of frames")
    if source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(
            f"{source}: not a video file ({source.suffix or 'no extension'}); "
            f"pass {'/'.join(sorted(e[1:] for e in VIDEO_EXTENSIONS))} or a folder of frames"
        )
    av = _import_av()
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise InputError(f"{source}: the file holds no video stream; pass a video file or a folder of frames")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or FOLDER_FPS
            total = int(stream.frames) or None
    except (av.FFmpegError, OSError) as exc:
        raise InputError(
            f"{source}: not a readable video ({exc.__class__.__name__}); "
            "re-encode it (e.g. to H.264 mp4) or pass a folder of frames"
        ) from None
    return FrameSource(path=source, fps=Fraction(rate), total=total)


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file in display orientation, from its header."""
    with open_image(path, load=False) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except DECODE_ERRORS as exc:
            raise InputError(
                f"{path}: not a readable image ({exc.__class__.__name__}); remove it from the frame folder"
            ) from None
    return (h, w) if orientation in _TRANSPOSED else (w, h)


def _check_sizes(files: list[Path]) -> None:
    first = image_size(files[0])
    for path in files[1:]:
        size = image_size(path)
        if size != first:
            raise InputError(
                f"{path} is {size[0]}x{size[1]} but {files[0].name} is {first[0]}x{first[1]}; "
                "resize all frames of the folder to one size"
            )


def tint(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 frame with each object tinted in its DAVIS palette colour."""
    colours = np.asarray(davis_palette(), dtype=np.float32).reshape(256, 3)
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[labels[fg]]
    return out.astype(np.uint8)


class OverlayWriter:
    """Writes frames to an mp4 (H.264 if available, else MPEG-4 part 2), atomically.

    Frames go to a temporary file next to ``path``, renamed on ``close()``.
    Odd widths / heights are padded by one edge pixel (yuv420p needs even sizes).

    Args:
        path: the .mp4 to write.
        fps: frame rate.
        hw: (H, W) of the frames.
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction, hw: tuple[int, int]) -> None:
        av = _import_av()
        self.path = Path(path)
        self._pending = PendingFile(self.path)
        self._hw = hw
        self.frames = 0
        try:
            self._container = av.open(str(self._pending.temp), "w", format="mp4")
        except BaseException:
            self._pending.discard()
            raise
        codec = _encoder_name(av)
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001 * 1000))
        self._stream.width = hw[1] + hw[1] % 2
        self._stream.height = hw[0] + hw[0] % 2
        self._stream.pix_fmt = "yuv420p"
        self.codec = codec
        self._av = av

    @property
    def temp(self) -> Path:
        """The hidden file being written, renamed onto ``path`` by ``close()``."""
        return self._pending.temp

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        h, w = self._hw
        if frame.shape[:2] != (h, w):
            raise ValueError(f"overlay frame is {frame.shape[1]}x{frame.shape[0]}, expected {w}x{h}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file into place."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._pending.commit()

    def abort(self) -> None:
        """Drop the unfinished file."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - best effort on an error path
            pass
        self._pending.discard()


def _encoder_name(av) -> str:
    for name in ("libx264", "h264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises various errors for unknown encoders
            continue
        return name
    raise MissingExtraError(
        "this PyAV build has no H.264 or MPEG-4 encoder; drop --overlay-video or install PyAV from PyPI"
    )
