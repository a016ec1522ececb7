"""``persam video``: segment the objects of a first-frame mask through a video."""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.cli.common import (
    add_model_options, add_quiet_option, check_output_file, check_output_folder, load_model, progress, require_extra, summary,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="segment objects through a video from a first-frame mask",
        description=(
            "Learn each object of the first frame's mask, then segment them in every frame (PerSAM's video "
            "protocol). Writes OUT/00000.png, OUT/00001.png, ... as palette PNGs of object ids (DAVIS naming)."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="folder of frames (sorted by name) or a video file (mp4/mov/webm/avi/mkv)")
    p.add_argument("--mask", required=True, metavar="FIRST.png",
                   help="first-frame mask: palette or grayscale PNG of object ids, or a binary 0/255 mask (one object)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder for the per-frame label maps")
    p.add_argument("--overlay-video", metavar="OUT.mp4", help="also write the frames with the objects tinted, as mp4")
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: fit two mask-scale weights per object on the first frame")
    p.add_argument("--detect-absent", action="store_true",
                   help="leave an object out of frames where its best similarity is below its presence threshold "
                        "(calibrated on the first frame; off by default, as in the reference protocol)")
    p.add_argument("--presence-threshold", type=float, metavar="S",
                   help="one presence threshold for every object (implies --detect-absent)")
    add_model_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.io import save_label_map
    from persam.io.frames import OverlayWriter, load_label_map, open_frames, tint
    from persam.session.video import VideoSession, VideoSettings

    out = check_output_folder(args.output)
    if args.overlay_video:
        check_output_file(args.overlay_video, "--overlay-video")
        require_extra("av", "--overlay-video")
    source = open_frames(args.input)
    labels = load_label_map(args.mask)
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{args.input}: no frame could be decoded ({source.stopped or 'empty video'}); "
                         "re-encode the video or pass a folder of frames")
    if labels.shape != first.shape[:2]:
        raise ValueError(f"{args.mask} is {labels.shape[1]}x{labels.shape[0]} but the frames of {args.input} are "
                         f"{first.shape[1]}x{first.shape[0]}; pass the mask drawn on the first frame")
    if not labels.any():
        raise ValueError(f"{args.mask} has no object pixel (all 0); mark each object with its id, or 255 for one object")
    model = load_model(args)
    settings = VideoSettings(detect_absent=args.detect_absent, presence_threshold=args.presence_threshold)
    session = VideoSession(model, first, labels, finetune=args.finetune, settings=settings)
    writer = OverlayWriter(args.overlay_video, source.fps, session.hw) if args.overlay_video else None
    shown = {"frame": first}

    def remembered():
        for frame in frames:
            shown["frame"] = frame
            yield frame

    written = 0
    try:
        for index, frame_labels, _ in progress(session.run(remembered()), source.total, "video", unit="frame"):
            save_label_map(out / f"{index:05d}.png", frame_labels)
            if writer is not None:
                writer.write(tint(shown["frame"], frame_labels))
            written += 1
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    if source.stopped:
        raise ValueError(f"{args.input}: {source.stopped}; the {written} frames decoded were segmented into {out}; "
                         "re-encode or re-download the video to segment the rest")
    shown_video = f" and {args.overlay_video}" if writer is not None else ""
    objects = len(session.object_ids)
    summary(args, f"persam video: {written} frames of {objects} object{'s' if objects != 1 else ''} written to {out}{shown_video}")
    return 0
