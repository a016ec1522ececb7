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
    warn,
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
    if args.tracker == "sam2":
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
    from persam.io.frames import OverlayWriter, open_frames
    from persam.io.masks import first_frame_labels, read_label_map
    from persam.jobs.video import run_settings, write_video
    from persam.session.video import VideoSession, VideoSettings

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
    source = open_frames(args.input)
    labels = read_label_map(args.mask) if args.mask else None
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        raise OptionsError(
            f"{args.input}: no frame could be decoded ({source.stopped or 'empty video'}); "
            "re-encode the video or pass a folder of frames"
        )
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
    done = write_video(
        session,
        first,
        frames,
        out,
        writer,
        settings=run_settings(source, session),
        wrap=lambda items: progress(items, source.total, "video", unit="frame"),
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


def _refuse_for_sam2(args: argparse.Namespace) -> None:
    """One line (exit 2) for every option that does not apply to --tracker sam2."""
    given = [
        n
        for n, v in (
            ("--point", args.point),
            ("--negative-point", args.negative_point),
            ("--box", args.box),
            ("--finetune", args.finetune),
            ("--precision", args.precision),
            ("--runtime", args.runtime),
        )
        if v
    ]
    refuse(given, "with --tracker sam2 (SAM 2 is seeded by --mask or --concept and tracks in fp32 with PyTorch)")
    if bool(args.mask) == bool(args.concept):
        raise OptionsError(
            "--tracker sam2 takes the first frame's objects either as --mask FIRST.png or as "
            "--concept C.persam (exactly one of the two)"
        )
    if args.mask:
        refuse(
            [
                n
                for n, v in (
                    ("--detect-absent", args.detect_absent),
                    ("--presence-threshold", args.presence_threshold is not None),
                    ("--lost-after", args.lost_after is not None),
                    ("--concept-checkpoint", args.concept_checkpoint),
                )
                if v
            ],
            "with --mask (no concept to search the objects with)",
        )
    if args.lost_after is not None and args.lost_after < 1:
        raise OptionsError(f"--lost-after must be at least 1 frame, got {args.lost_after}")
    if len(args.concept) > 255:
        raise OptionsError(f"{len(args.concept)} concepts given; at most 255 objects are tracked")


def _tracker_model(args: argparse.Namespace, metas: list[dict]) -> str:
    """--model, else the concepts' model when they share one SAM 2 model."""
    from persam.backends.sam2_models import is_sam2

    if args.model:
        return args.model
    names = {meta["backend"] for meta in metas}
    if len(names) == 1 and is_sam2(next(iter(names))):
        return next(iter(names))
    made = f"the concept was made with {', '.join(sorted(names))}" if names else "a mask gives no model"
    raise OptionsError(f"--tracker sam2 needs --model NAME, a SAM 2 model (e.g. sam2.1_hiera_tiny): {made}")


def _concept_model(args: argparse.Namespace, path: str, meta: dict, tracker_model: str, loaded: dict):
    """The PersamModel a concept was made with (loaded once per name): PerSAM locates with the concept's own model."""
    import torch

    from persam.errors import PersamError
    from persam.session.photo import load

    name = meta["backend"]
    if name not in loaded:
        if name == tracker_model:
            checkpoint, random = args.checkpoint, args.random_weights
        else:
            checkpoint = args.concept_checkpoint
            random = checkpoint is None and meta.get("checkpoint_sha256") == "random"
        if random:  # the same seeded random weights as `persam personalize --random-weights`
            torch.manual_seed(0)
        try:
            loaded[name] = load(name, None if random else checkpoint, device=args.device, random_weights=random)
        except PersamError as exc:
            if name == tracker_model:
                raise
            raise OptionsError(
                f"{path} was made with {name}, which could not be loaded ({exc}); pass its weights "
                "with --concept-checkpoint PATH"
            ) from None
    return loaded[name]


def run_sam2(args: argparse.Namespace) -> int:
    """``persam video --tracker sam2``: SAM 2's memory tracks the objects; PerSAM seeds them from concepts."""
    import itertools
    import warnings

    import numpy as np

    from persam.io.frames import OverlayWriter, open_frames
    from persam.io.masks import first_frame_labels, read_label_map
    from persam.jobs.tracking import write_manifest, write_tracked
    from persam.session.concept_file import load_concept, read_concept_metadata
    from persam.session.tracker import SamTracker, TrackerSettings, concept_locator
    from persam.session.video_predictor import load_video_predictor

    _refuse_for_sam2(args)
    if args.random_weights and args.checkpoint:
        raise OptionsError(
            f"--checkpoint {args.checkpoint} has no effect with --random-weights (nothing is loaded); drop one of them"
        )
    metas = [read_concept_metadata(path)[0] for path in args.concept]  # a bad concept fails before any model loads
    name = _tracker_model(args, metas)
    out = check_output_folder(args.output)
    if args.overlay_video:
        check_output_file(args.overlay_video, "--overlay-video")
        require_extra("av", "--overlay-video")
    source = open_frames(args.input)
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        raise OptionsError(
            f"{args.input}: no frame could be decoded ({source.stopped or 'empty video'}); "
            "re-encode the video or pass a folder of frames"
        )
    warnings.filterwarnings("ignore", message=r"cannot import name '_C'")  # sam2 without its compiled hole filling
    if args.random_weights:
        import torch

        torch.manual_seed(0)
    predictor, sha = load_video_predictor(name, args.checkpoint, random_weights=args.random_weights, device=args.device)
    masks: dict[int, np.ndarray] = {}
    locate = find = None  # --mask: no concept to search with
    if args.mask:
        labels = first_frame_labels(
            read_label_map(args.mask),
            first.shape[:2],
            name=str(args.mask),
            frame=f"the frames of {args.input} are",
            drawn_mask=True,
        )
        masks = {int(oid): labels == oid for oid in np.unique(labels) if oid}
    else:
        loaded: dict = {}
        concepts = {}
        for oid, (path, meta) in enumerate(zip(args.concept, metas), start=1):
            concepts[oid] = load_concept(path, _concept_model(args, path, meta, name, loaded))
            if args.presence_threshold is not None:
                concepts[oid].presence_threshold = args.presence_threshold
        detect = args.detect_absent or args.presence_threshold is not None
        # until an object is first found: every frame from frame 0, presence check as asked (or saved in the concept)
        finders = {
            oid: concept_locator({oid: concept}, detect_absent=detect or concept.presence_threshold is not None)
            for oid, concept in concepts.items()
        }

        find = lambda oid, frame: finders[oid](oid, frame)  # noqa: E731

        locate = concept_locator(concepts, detect_absent=True)  # a lost object: always with the presence check
    settings = TrackerSettings(lost_after=args.lost_after or 3)
    tracker = SamTracker(
        predictor,
        itertools.chain([first], frames),
        masks,
        count=source.total,
        locate=locate,
        settings=settings,
        waiting=set() if args.mask else set(range(1, len(args.concept) + 1)),
        find=find,
    )
    writer = OverlayWriter(args.overlay_video, source.fps, tracker.hw) if args.overlay_video else None
    written, lost = write_tracked(
        tracker, out, writer, wrap=lambda items: progress(items, source.total, "video", unit="frame")
    )
    write_manifest(
        out,
        tracker,
        written,
        lost,
        input=str(args.input),
        model=name,
        checkpoint_sha256=sha,
        concepts=list(args.concept),
        overlay=args.overlay_video,
    )
    if source.stopped:
        raise OptionsError(
            f"{args.input}: {source.stopped}; the {written} frames decoded were tracked into {out}; "
            "re-encode or re-download the video to track the rest"
        )
    for oid in sorted(tracker.waiting):
        warn(f"{args.concept[oid - 1]}: not found in any of the {written} frames of {args.input}; its masks are empty")
    shown = f" and {args.overlay_video}" if writer is not None else ""
    refound = sum(max(len(s) - 1, 0) for s in tracker.seeds.values())
    count = len(tracker.object_ids)
    summary(
        args,
        f"persam video: {written} frames of {count} object{'s' if count != 1 else ''} tracked by "
        f"SAM 2 ({name}) written to {out}{shown}; {refound} re-detection{'s' if refound != 1 else ''}",
    )
    return 0
