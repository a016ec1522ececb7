"""``persam video --tracker sam2``: SAM 2's video predictor tracks the first frame's objects, seeded by
the mask or by saved concepts (``persam.session.tracker``, files by ``persam.jobs.tracking``).

Like ``persam video``, a run holds its output folder's lock (``persam.io.lock``) and follows the one Ctrl-C
behaviour (``persam.engine.interrupt``).
"""

from __future__ import annotations

import argparse

from persam.cli.common import check_output_file, check_output_folder, progress, refuse, require_extra, summary, warn
from persam.errors import OptionsError


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
    from persam.io.frames import first_frame, open_frames
    from persam.io.lock import folder_lock
    from persam.session.concept_file import read_concept_metadata
    from persam.session.video_predictor import require_sam2

    _refuse_for_sam2(args)
    if args.random_weights and args.checkpoint:
        raise OptionsError(
            f"--checkpoint {args.checkpoint} has no effect with --random-weights (nothing is loaded); drop one of them"
        )
    metas = [read_concept_metadata(path)[0] for path in args.concept]  # a bad concept fails before any model loads
    name = _tracker_model(args, metas)
    require_sam2(name)  # before the output folder's lock makes the folder
    out = check_output_folder(args.output)
    if args.overlay_video:
        check_output_file(args.overlay_video, "--overlay-video")
        require_extra("av", "--overlay-video")
    source = open_frames(args.input)
    frames, first = first_frame(source)
    with folder_lock(out):  # a second run into the folder is refused before any model loads
        return _track(args, name, metas, out, source, first, frames)


def _track(args: argparse.Namespace, name: str, metas: list[dict], out, source, first, frames) -> int:
    """The tracking itself, under the output folder's lock."""
    import itertools
    import threading
    import warnings

    import numpy as np

    from persam.engine.interrupt import stop_on_ctrl_c
    from persam.io.frames import OverlayWriter
    from persam.io.masks import first_frame_labels, read_label_map
    from persam.jobs.tracking import write_tracked
    from persam.session.concept_file import load_concept
    from persam.session.tracker import SamTracker, TrackerSettings, concept_locator
    from persam.session.video_predictor import load_video_predictor

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
    manifest = dict(
        input=str(args.input),
        model=name,
        checkpoint_sha256=sha,
        concepts=list(args.concept),
        overlay=args.overlay_video,
    )
    with stop_on_ctrl_c(threading.Event()) as stop:
        written, _ = write_tracked(
            tracker,
            out,
            writer,
            wrap=lambda items: progress(items, source.total, "video", unit="frame"),
            stop=stop,
            manifest=manifest,
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
