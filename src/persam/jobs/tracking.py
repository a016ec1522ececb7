"""Writing a clip tracked by SAM 2 (``persam video --tracker sam2``, ``persam eval davis --tracker sam2``).

Files under the output folder:
    ``00000.png``, ``00001.png``, ...  palette PNGs of object ids, one per frame (DAVIS naming)
    ``manifest.json``                  rewritten atomically as frames finish, after them::

        {"tracker": "sam2", "model", "checkpoint_sha256", "input", "frames", "complete", "lost_after",
         "objects": [{"id": 1, "seeds": [{"frame": 0, "source": "mask" | "concept",
                                          "prompts": [{"points_xy": [[x, y], ...], "point_labels": [...],
                                                       "box_xyxy": [x0, y0, x1, y1] or null}, ...]}, ...],
                      "lost_frames": N, "unseen_frames": M}, ...],
         "searches": K, "notes": [...]}

    where each seed is one prompting of SAM 2 for that object: frame 0 (the
    given mask, or the mask PerSAM found from the object's concept) and every
    frame where PerSAM found a lost object again; ``prompts`` holds PerSAM's
    decoder passes for a concept seed (first pass first, photo pixels) and is
    empty for a mask seed. An object given as a concept that is not on frame
    0 is searched on every frame until found: its first seed is that frame,
    ``unseen_frames`` counts the frames before it (empty masks; all frames and
    no seeds: never found). ``lost_frames`` counts the frames after its first
    seed on which its mask was empty; ``searches`` the concept searches after
    frame 0. ``frames`` counts the leading frames written; ``complete`` is
    false until the last one. The tracker does not resume (SAM 2's memory is
    not in the files): a run again into the folder tracks from frame 0.

Ctrl-C (``stop``, set by ``persam.engine.interrupt`` in the command): the
frame being tracked is finished and written, the manifest records it, and
``KeyboardInterrupt`` ends the run; a second Ctrl-C interrupts that frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from persam.errors import InputError
from persam.eval.davis import Davis2017Dataset, read_davis_labels
from persam.eval.davis_metrics import DAVIS_VOID_LABEL
from persam.io import first_frame_labels, load_image, save_label_map
from persam.io.atomic import atomic_write_json
from persam.io.frames import OverlayWriter, tint
from persam.jobs.davis import SequenceRun, read_frames
from persam.jobs.manifest import Pacer
from persam.jobs.timing import stopwatch
from persam.session.tracker import SamTracker, TrackerSettings

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

MANIFEST = "manifest.json"


def write_tracked(
    tracker: SamTracker,
    masks_dir: Path,
    overlay: OverlayWriter | None = None,
    wrap: Callable[[Iterator], Iterator] = lambda items: items,
    name: Callable[[int], str] = lambda index: f"{index:05d}",
    stop: threading.Event | None = None,
    manifest: dict | None = None,
) -> tuple[int, dict[int, int]]:
    """Track every frame and write ``masks_dir/<name(index)>.png`` as each comes.

    Args:
        tracker: the tracker, seeded on frame 0.
        masks_dir: folder of the palette PNGs.
        overlay: the overlay video writer, closed at the end (aborted on any error).
        wrap: wraps the ``TrackedFrame`` stream (a progress bar).
        name: file stem of frame ``index``.
        stop: once set (a first Ctrl-C), the frame being tracked is the last: it is written and recorded,
            then ``KeyboardInterrupt`` is raised.
        manifest: the extra keys of ``masks_dir/manifest.json`` (module docstring), kept from the start,
            after each frame (at most about once a second) and at the end, also when the run fails or is
            interrupted; None: no manifest.

    Returns:
        (frames written, object id -> frames on which its mask was empty once it was found).
    """
    lost = {oid: 0 for oid in tracker.object_ids}
    state = {"written": 0, "complete": False}

    def write() -> None:
        write_manifest(masks_dir, tracker, state["written"], lost, complete=state["complete"], **manifest)

    pacer = Pacer(write)

    def record(now: bool = True) -> None:
        if manifest is not None:
            pacer(now)

    try:
        record()  # an earlier run's manifest no longer vouches for the frames
        for frame in wrap(tracker.run()):
            save_label_map(masks_dir / f"{name(frame.index)}.png", frame.labels)
            if overlay is not None:
                overlay.write(tint(tracker.rgb(frame.index), frame.labels))
            for oid in tracker.object_ids:
                lost[oid] += int(oid not in tracker.waiting and not frame.masks[oid].any())
            state["written"] += 1
            record(now=False)
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
    except BaseException:
        if overlay is not None:
            overlay.abort()
        try:
            record()
        except OSError:  # the folder went away or filled up: the error being raised says so
            pass
        raise
    if overlay is not None:
        overlay.close()
    state["complete"] = True
    record()
    return state["written"], lost


def write_manifest(
    masks_dir: Path, tracker: SamTracker, written: int, lost: dict[int, int], complete: bool = True, **extra: object
) -> Path:
    """``masks_dir/manifest.json`` (see the module docstring); ``extra`` keys go in first."""
    data = {
        **extra,
        "tracker": "sam2",
        "frames": written,
        "complete": complete,
        "lost_after": tracker.settings.lost_after,
        "objects": [
            {
                "id": oid,
                "seeds": [seed.to_dict() for seed in tracker.seeds[oid] if seed.frame < written],
                "lost_frames": lost[oid],
                "unseen_frames": tracker.unseen[oid],
            }
            for oid in tracker.object_ids
        ],
        "searches": tracker.searches,
        "notes": list(tracker.notes),
    }
    path = masks_dir / MANIFEST
    atomic_write_json(path, data)
    return path


def run_davis_tracker(
    predictor: nn.Module,
    root: str | Path,
    out_dir: str | Path,
    *,
    sequences: Iterable[str] | str | None = None,
    subset: str = "val",
    resolution: str = "480p",
    settings: TrackerSettings | None = None,
    progress: Callable[..., Iterable] | None = None,
) -> list[SequenceRun]:
    """Track every DAVIS 2017 sequence from its first-frame annotation with SAM 2's video predictor.

    Frames stream from the JPEG files; void pixels (255) of the first
    annotation count as background. No re-detection (no concept: the
    annotation seeds the objects). Writes ``out_dir/<seq>/<frame>.png``.

    Args:
        predictor: ``SAM2VideoPredictor`` (``persam.session.video_predictor.load_video_predictor``).
        root: DAVIS 2017 root; ``sequences``, ``subset``, ``resolution`` as ``persam.jobs.davis.run_davis``.
        settings: tracker knobs.
        progress: ``progress(items, total, desc, unit="frame")`` or None.
    """
    dataset = Davis2017Dataset(root, sequences, subset=subset, resolution=resolution)
    out_root = Path(out_dir)
    runs = []
    for seq in dataset:
        first_path = seq.annotations[0]
        if first_path.stem != seq.frames[0].stem:
            raise InputError(
                f"sequence {seq.name!r}: first annotation {first_path.name} does not match the first "
                f"frame {seq.frames[0].name}; the first frame must be annotated"
            )
        with stopwatch(predictor.device) as lap:
            first = load_image(seq.frames[0])
            labels = first_frame_labels(
                read_davis_labels(first_path),
                first.shape[:2],
                name=str(first_path),
                frame=f"{seq.frames[0]} is",
                void=DAVIS_VOID_LABEL,
            )
            masks = {int(oid): labels == oid for oid in np.unique(labels) if oid}
            tracker = SamTracker(
                predictor, read_frames(seq.frames), masks, count=len(seq.frames), settings=settings or TrackerSettings()
            )
            wrap = (
                (lambda items, seq=seq: progress(items, len(seq.frames), seq.name, unit="frame"))
                if progress is not None
                else (lambda items: items)
            )
            written, _ = write_tracked(
                tracker, out_root / seq.name, wrap=wrap, name=lambda index, seq=seq: seq.frames[index].stem
            )
        runs.append(SequenceRun(seq.name, written, tuple(tracker.object_ids), lap.seconds, tuple(tracker.notes)))
    return runs
