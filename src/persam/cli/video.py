"""``persam video``: segment the objects of a first-frame mask through a video.

``--tracker persam`` (default) runs PerSAM's video protocol; ``--tracker sam2``
tracks with SAM 2's video predictor, seeded by the mask or by saved concepts
(``persam.session.tracker``, files by ``persam.jobs.tracking``).
"""

from __future__ import annotations

import argparse

from persam.cli.common import (
    add_model_options,
    add_quiet_option,
    check_output_file,
    check_output_folder,
    load_model,
    progress,
    refuse,
    require_extra,
    summary,
)
from persam.cli.references import object_prompts_from_args
from persam.errors import OptionsError, PersamError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="segment objects through a video from a first-frame mask",
        description=(
            "Learn each object of the first frame's mask, then segment them in every frame (PerSAM's video "
            "protocol). Writes OUT/00000.png, OUT/00001.png, ... as palette PNGs of object ids (DAVIS naming)."
        ),
    )
    p.add_argument(
        "input", metavar="INPUT", help="folder of frames (sorted by name) or a video file (mp4/mov/webm/avi/mkv)"
    )
    p.add_argument(
        "--mask",
        metavar="FIRST.png",
        help="first-frame mask: palette or grayscale PNG of object ids, or a binary 0/255 mask (one object)",
    )
    p.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="ID:X,Y",
        help="instead of --mask: a click on object ID (1..255) in the first frame, photo pixels (repeatable)",
    )
    p.add_argument(
        "--negative-point",
        action="append",
        default=[],
        metavar="ID:X,Y",
        help="a background click for object ID's mask (repeatable)",
    )
    p.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="ID:X0,Y0,X1,Y1",
        help="instead of --mask: a box around object ID in the first frame (one per object)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder for the per-frame label maps")
    p.add_argument("--overlay-video", metavar="OUT.mp4", help="also write the frames with the objects tinted, as mp4")
    p.add_argument(
        "--finetune", action="store_true", help="PerSAM-F: fit two mask-scale weights per object on the first frame"
    )
    p.add_argument(
        "--detect-absent",
        action="store_true",
        help="leave an object out of frames where its best similarity is below its presence threshold "
        "(calibrated on the first frame; off by default, as in the reference protocol)",
    )
    p.add_argument(
        "--presence-threshold",
        type=float,
        metavar="S",
        help="one presence threshold for every object (implies --detect-absent)",
    )
    p.add_argument(
        "--tracker",
        choices=["persam", "sam2"],
        default="persam",
        help="persam (default): PerSAM on every frame, the reference protocol; sam2: SAM 2's video "
        "predictor tracks the first frame's objects with its memory (--model a SAM 2 model)",
    )
    p.add_argument(
        "--concept",
        action="append",
        default=[],
        metavar="C.persam",
        help="with --tracker sam2, instead of --mask: PerSAM finds this saved concept (object 1, the next "
        "--concept object 2, ...) on the first frame, or, with --detect-absent, --presence-threshold "
        "or a threshold saved in the concept, on the first frame it appears in (empty masks before); "
        "and again whenever SAM 2 loses it",
    )
    p.add_argument(
        "--lost-after",
        type=int,
        metavar="N",
        help="with --tracker sam2 and --concept: search a lost object again after N frames with an object "
        "score <= 0 (default 3)",
    )
    p.add_argument(
        "--concept-checkpoint",
        metavar="PATH",
        help="weights of the concept's model when it is not the tracker's --model (default: its download; "
        "random weights for a concept made with random weights)",
    )
    add_model_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``persam video``: the checks, then the run under the output folder's lock (``persam.io.lock``)."""
    if args.tracker == "sam2":
        from persam.cli.video_sam2 import run_sam2

        return run_sam2(args)
    refuse(
        [
            n
            for n, v in (
                ("--concept", args.concept),
                ("--lost-after", args.lost_after is not None),
                ("--concept-checkpoint", args.concept_checkpoint),
            )
            if v
        ],
        "with --tracker persam (--tracker sam2 options)",
    )
    from persam.io.lock import folder_lock

    objects = object_prompts_from_args(args.point, args.negative_point, args.box)
    if bool(objects) == bool(args.mask):
        raise OptionsError(
            "pass the first frame's objects either as --mask FIRST.png or as --point ID:X,Y / "
            "--box ID:X0,Y0,X1,Y1 (exactly one of the two)"
        )
    out = check_output_folder(args.output)
    if args.overlay_video:
        check_output_file(args.overlay_video, "--overlay-video")
        require_extra("av", "--overlay-video")
    from persam.io.frames import first_frame, open_frames
    from persam.io.masks import read_label_map

    source = open_frames(args.input)
    labels = read_label_map(args.mask) if args.mask else None
    frames, first = first_frame(source)
    with folder_lock(out):  # a second run into the folder is refused before any model loads
        return _segment(args, objects, out, source, first, frames, labels)


def _segment(args: argparse.Namespace, objects: dict, out, source, first, frames, labels) -> int:
    """PerSAM's video protocol, under the output folder's lock; Ctrl-C as ``persam.engine.interrupt``."""
    import threading

    from persam.engine.interrupt import stop_on_ctrl_c
    from persam.io.frames import OverlayWriter
    from persam.io.masks import first_frame_labels
    from persam.jobs.video import run_settings, write_video
    from persam.session.video import VideoSession, VideoSettings

    if labels is None:
        from persam.session.prompts import Prompts, labels_from_prompts

        for oid, kwargs in objects.items():  # bad coordinates fail before the model loads
            try:
                Prompts.checked(first.shape[:2], **kwargs)
            except PersamError as exc:
                raise exc.reworded(f"{args.input}, first frame, object {oid}: {exc}") from None
        model = load_model(args)
        labels = labels_from_prompts(model, first, objects)
    else:
        labels = first_frame_labels(
            labels, first.shape[:2], name=str(args.mask), frame=f"the frames of {args.input} are", drawn_mask=True
        )
        model = load_model(args)
    settings = VideoSettings(detect_absent=args.detect_absent, presence_threshold=args.presence_threshold)
    session = VideoSession(model, first, labels, finetune=args.finetune, settings=settings)
    writer = OverlayWriter(args.overlay_video, source.fps, session.hw) if args.overlay_video else None
    with stop_on_ctrl_c(threading.Event()) as stop:
        done = write_video(
            session,
            first,
            frames,
            out,
            writer,
            settings=run_settings(source, session),
            wrap=lambda items: progress(items, source.total, "video", unit="frame"),
            stop=stop,
        )
    written = done.frames
    if source.stopped:
        raise OptionsError(
            f"{args.input}: {source.stopped}; the {written} frames decoded were segmented into {out}; "
            "re-encode or re-download the video to segment the rest"
        )
    shown_video = f" and {args.overlay_video}" if writer is not None else ""
    objects = len(session.object_ids)
    earlier = f" ({done.reused} of them by an earlier run of the same command)" if done.reused else ""
    summary(
        args,
        f"persam video: {written} frames of {objects} object{'s' if objects != 1 else ''} written to "
        f"{out}{shown_video}{earlier}",
    )
    return 0
