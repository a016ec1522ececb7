"""Running the video protocol on DAVIS 2017 (semi-supervised: first-frame annotation given).

Layout (``persam.eval.davis``): ``ROOT/JPEGImages/480p/<seq>/00000.jpg``,
``ROOT/Annotations/480p/<seq>/00000.png``, ``ROOT/ImageSets/2017/val.txt``.
Output: ``OUT_DIR/<seq>/<frame>.png`` palette PNGs of object ids, one per
frame, named like the frames; ready for ``persam.eval.davis.evaluate_davis``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from persam.errors import InputError
from persam.eval.davis import Davis2017Dataset, DavisSequence, read_davis_labels
from persam.eval.davis_metrics import DAVIS_VOID_LABEL
from persam.io import first_frame_labels, load_image, save_label_map
from persam.jobs.timing import stopwatch
from persam.session.video import VideoSession, VideoSettings

if TYPE_CHECKING:
    from persam.session.photo import PersamModel

T = TypeVar("T")
#: ``progress(items, total, desc, unit=...)`` as ``persam.cli.common.progress``.
Progress = Callable[..., Iterable[T]]


@dataclass(frozen=True)
class SequenceRun:
    """What ``run_davis`` did on one sequence.

    Attributes:
        name: sequence name.
        frames: frames written (the first included).
        objects: object ids of the first-frame annotation.
        seconds: wall time, model set-up (and PerSAM-F fit) included.
        notes: the session's notes (vanished / returning objects, small objects).
    """

    name: str
    frames: int
    objects: tuple[int, ...]
    seconds: float
    notes: tuple[str, ...]


def read_frames(paths: Iterable[Path]) -> Iterator[np.ndarray]:
    """The (H, W, 3) uint8 RGB frames of ``paths``, read one at a time as they are consumed."""
    for path in paths:
        yield load_image(path)


def run_davis(
    model: PersamModel,
    root: str | Path,
    out_dir: str | Path,
    *,
    finetune: bool = False,
    sequences: Iterable[str] | str | None = None,
    subset: str = "val",
    resolution: str = "480p",
    settings: VideoSettings | None = None,
    progress: Progress | None = None,
) -> list[SequenceRun]:
    """Segment every frame of DAVIS 2017 sequences from their first-frame annotation.

    Void pixels (255) of the first annotation count as background. Frames
    are read one at a time.

    Args:
        model: a ``persam.session.photo.PersamModel``.
        root: DAVIS 2017 root.
        out_dir: where ``<seq>/<frame>.png`` are written (atomically, per file).
        finetune: PerSAM-F instead of training-free PerSAM.
        sequences: names to run; default the ``ImageSets/2017/<subset>.txt`` list.
        subset: image-set name used when ``sequences`` is None.
        resolution: ``"480p"`` or ``"Full-Resolution"``.
        settings: video protocol knobs (default = reference).
        progress: wraps each sequence's frame iterator, called as
            ``progress(items, total, desc, unit="frame")``; e.g.
            ``persam.cli.common.progress``. None = no progress display.

    Returns:
        One ``SequenceRun`` per sequence, in order.

    Raises:
        FileNotFoundError, ValueError: broken layout, empty first annotation,
            frames and annotation of different sizes.
    """
    dataset = Davis2017Dataset(root, sequences, subset=subset, resolution=resolution)
    out_root = Path(out_dir)
    runs = []
    for seq in dataset:
        with stopwatch(model.backend.device) as lap:
            session = _start_session(model, seq, finetune, settings)
            stream = session.run(read_frames(seq.frames[1:]))
            if progress is not None:
                stream = progress(stream, len(seq.frames), seq.name, unit="frame")
            count = 0
            for index, frame_labels, _ in stream:
                save_label_map(out_root / seq.name / f"{seq.frames[index].stem}.png", frame_labels)
                count += 1
        runs.append(SequenceRun(seq.name, count, tuple(session.object_ids), lap.seconds, tuple(session.notes)))
    return runs


def _start_session(
    model: PersamModel, seq: DavisSequence, finetune: bool, settings: VideoSettings | None
) -> VideoSession:
    """A video session on the sequence's first frame and annotation (void pixels = background)."""
    first_path = seq.annotations[0]
    if first_path.stem != seq.frames[0].stem:
        raise InputError(
            f"sequence {seq.name!r}: first annotation {first_path.name} does not match the first "
            f"frame {seq.frames[0].name}; the first frame must be annotated"
        )
    first = load_image(seq.frames[0])
    labels = first_frame_labels(
        read_davis_labels(first_path),
        first.shape[:2],
        name=str(first_path),
        frame=f"{seq.frames[0]} is",
        void=DAVIS_VOID_LABEL,
    )
    return VideoSession(model, first, labels, finetune=finetune, settings=settings)
