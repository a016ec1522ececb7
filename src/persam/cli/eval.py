"""``persam eval``: score the method on PerSeg (mIoU, bIoU) and DAVIS 2017 predictions (J&F)."""

from __future__ import annotations

import argparse
from pathlib import Path

from persam.cli.common import (
    add_model_options,
    check_output_file,
    check_output_folder,
    given_model_options,
    load_model,
    progress,
    refuse,
    write_json,
)
from persam.cli.references import add_prior_options, prior_options
from persam.errors import OptionsError, PersamError
from persam.session.options import COMPONENTS, DEFAULT_PARTS, FitSettings, PersamSettings, method_settings

METHODS = ("persam", "persam-f")
DAVIS_COLUMNS = ("J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate on PerSeg and DAVIS 2017, or score existing predictions",
        description="Run the method on a benchmark and score it, or score existing predictions.",
    )
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    ps = bench.add_parser(
        "perseg",
        help="PerSeg: personalize on image 00 of each object, segment the others, report mIoU and bIoU",
        description=(
            "Personalize on reference 00 of every object, segment its other images, write the masks "
            "to OUT/<object>/NN.png and report per-object IoU / boundary IoU and their means (percent). "
            "With --pred, only score the masks already in that folder."
        ),
    )
    ps.add_argument(
        "root", metavar="ROOT", help="PerSeg root holding Images/<object>/NN.jpg and Annotations/<object>/NN.png"
    )
    ps.add_argument(
        "--method", choices=METHODS, help="persam (training-free, default) or persam-f (fit on the reference)"
    )
    ps.add_argument("--pred", metavar="DIR", help="score the masks in DIR/<object>/NN.png instead of running the model")
    ps.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="where to write the masks (default ./persam-eval/perseg-<method>[-no-<component>...])",
    )
    ps.add_argument(
        "--without",
        action="append",
        default=[],
        choices=COMPONENTS,
        help="switch a PerSAM component off (ablation); repeatable",
    )
    ps.add_argument("--json", metavar="FILE", help="also write every reported figure and the settings as JSON")
    add_prior_options(ps)
    add_model_options(ps)
    ps.set_defaults(func=run_perseg)

    dv = bench.add_parser(
        "davis",
        help="DAVIS 2017: run video PerSAM / PerSAM-F and score it, or score predictions (J&F, J, F)",
        description="Run the video method on DAVIS 2017 (or score existing palette-PNG predictions with "
        "--pred): J&F, region J, boundary F (fractions).",
    )
    dv.add_argument("root", metavar="ROOT", help="DAVIS 2017 root (Annotations/480p/<seq>/, ImageSets/2017/val.txt)")
    dv.add_argument(
        "--pred",
        metavar="DIR",
        help="score predictions DIR/<seq>/00000.png (palette or grayscale object ids) instead of running the model",
    )
    dv.add_argument(
        "--method",
        choices=["persam-f", "persam"],
        help="video method to run (default persam-f, as the paper's DAVIS figure)",
    )
    dv.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="where to write the predicted palette PNGs (default ./persam-eval/davis-<method>)",
    )
    dv.add_argument("--sequences", metavar="A,B", help="comma-separated sequences (default: ImageSets/2017/val.txt)")
    dv.add_argument("--json", metavar="FILE", help="also write the global and per-object figures as JSON")
    dv.add_argument(
        "--tracker",
        choices=["persam", "sam2"],
        help="persam (default): the video method; sam2: SAM 2's video predictor seeded with the first-frame "
        "annotation (--model a SAM 2 model)",
    )
    add_model_options(dv)
    dv.set_defaults(func=run_davis)


# ------------------------------------------------------------------ PerSeg


def default_perseg_out(method: str, without: list[str]) -> Path:
    """``./persam-eval/perseg-<method>``, with ``-no-<component>`` for each ablated component."""
    suffix = "".join(f"-no-{c}" for c in COMPONENTS if c in without)
    return Path("persam-eval") / f"perseg-{method}{suffix}"


def predict_perseg(dataset, model, out: Path, method: str, settings: PersamSettings, prior: dict | None = None) -> int:
    """Personalize on each object's reference, segment its test images, write ``out/<obj>/NN.png``.

    Returns:
        The number of masks written.
    """
    from persam.io import load_image, save_mask

    tasks = [(obj, stem, image) for obj in dataset for stem, image in zip(obj.test_ids, obj.test_images)]
    concept, current = None, None
    for obj, stem, image in progress(tasks, len(tasks), f"perseg {method}"):
        if obj.name != current:
            try:
                concept = model.personalize(
                    obj.ref_image, obj.ref_mask, finetune=method == "persam-f", settings=settings, **(prior or {})
                )
            except PersamError as exc:
                raise exc.reworded(f"object {obj.name!r}: {exc}") from None
            current = obj.name
        result = concept.segment(load_image(image))
        save_mask(out / obj.name / f"{stem}.png", result.mask)
    return len(tasks)


def run_perseg(args: argparse.Namespace) -> int:
    from persam.eval.perseg import PerSegDataset, evaluate_perseg

    if args.json:
        check_output_file(args.json, "--json")
    dataset = PerSegDataset(args.root)  # a broken layout fails here, before the model loads
    method = args.method or "persam"
    info: dict[str, object] = {"method": None, "model": None, "settings": None}
    if args.pred is not None:
        given = [
            n
            for n, v in (
                ("--method", args.method),
                ("--without", args.without),
                ("--output", args.output),
                ("--prior", args.prior != "similarity"),
                ("--parts", args.parts is not None),
            )
            if v
        ]
        refuse(given + given_model_options(args), "with --pred (the masks in it are only scored)")
        pred_dir = Path(args.pred)
    else:
        if method == "persam-f" and args.without:
            raise OptionsError("--without applies to training-free PerSAM only; PerSAM-F does not use these components")
        settings = method_settings(args.without)
        prior = prior_options(args, finetune=method == "persam-f")
        suffix = {"similarity": "", "part-aware": "-parts", "matcher": "-matcher"}[prior["prior"]]
        name = f"{method}{suffix}"
        pred_dir = check_output_folder(args.output if args.output else default_perseg_out(name, args.without))
        model = load_model(args)
        predict_perseg(dataset, model, pred_dir, method, settings, prior)
        backend = model.backend
        recorded: dict[str, object] = {**settings.to_dict(), "without": settings.disabled(), "prior": prior["prior"]}
        if prior["prior"] == "part-aware":
            recorded["parts"] = list(prior["parts"] or DEFAULT_PARTS)
        if method == "persam-f":
            recorded["fit"] = FitSettings().to_dict()
        if prior["prior"] == "matcher":  # its DINOv2 was built for the run
            dino = model.feature_backbone()
            recorded["dino"], recorded["dino_sha256"] = dino.name, dino.checkpoint_sha256
        info = {
            "method": method,
            "model": backend.name,
            "settings": recorded,
            "checkpoint_sha256": backend.checkpoint_sha256,
            "precision": backend.precision,
            "runtime": backend.runtime,
            "device": str(backend.device),
        }
    report = evaluate_perseg(dataset.root, pred_dir)

    width = max([len("object")] + [len(o.name) for o in report.objects])
    print(f"{'object':<{width}}  {'IoU':>7}  {'bIoU':>7}")
    for o in report.objects:
        print(f"{o.name:<{width}}  {o.iou:7.2f}  {o.biou:7.2f}")
    print(f"{'mean':<{width}}  {report.miou:7.2f}  {report.mbiou:7.2f}")
    print(
        f"mIoU {report.miou:.2f}  mBIoU {report.mbiou:.2f}  ({len(report.objects)} objects, predictions in {pred_dir})"
    )

    if args.json:
        data = {
            "benchmark": "perseg",
            "miou": report.miou,
            "biou": report.mbiou,
            "objects": {o.name: {"iou": o.iou, "biou": o.biou, "images": o.num_images} for o in report.objects},
            **info,
            "predictions": str(pred_dir),
        }
        write_json(args.json, data)
    return 0


# ------------------------------------------------------------------ DAVIS


def _track_davis(args: argparse.Namespace, pred: str, sequences: list[str] | None) -> None:
    """Write SAM 2's tracks of every sequence (``persam.jobs.tracking.run_davis_tracker``)."""
    import warnings

    from persam.jobs.tracking import run_davis_tracker
    from persam.session.video_predictor import load_video_predictor

    warnings.filterwarnings("ignore", message=r"cannot import name '_C'")  # sam2 without its compiled hole filling
    if args.random_weights:
        import torch

        torch.manual_seed(0)
    predictor, _ = load_video_predictor(
        args.model, args.checkpoint, random_weights=args.random_weights, device=args.device
    )
    run_davis_tracker(predictor, args.root, pred, sequences=sequences, progress=progress)


def _davis_row(name: str, stats: dict, width: int) -> str:
    return f"{name:<{width}}" + "".join(f"  {stats[c]:>8.3f}" for c in DAVIS_COLUMNS)


def run_davis(args: argparse.Namespace) -> int:
    from persam.eval.davis import evaluate_davis

    sequences = None
    if args.sequences is not None:
        sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
        if not sequences:
            raise OptionsError("--sequences is empty; pass comma-separated sequence names, e.g. bear,blackswan")
    pred = args.pred
    if pred is not None:
        given = [n for n, v in (("--method", args.method), ("--output", args.output), ("--tracker", args.tracker)) if v]
        refuse(given + given_model_options(args), "with --pred (the predictions in it are only scored)")
    else:
        from persam.eval.davis import Davis2017Dataset
        from persam.jobs.davis import run_davis as run_video

        Davis2017Dataset(args.root, sequences)  # a malformed layout fails before the model loads
        if args.tracker == "sam2":
            refuse(
                [
                    n
                    for n, v in (
                        ("--method", args.method),
                        ("--precision", args.precision),
                        ("--runtime", args.runtime),
                    )
                    if v
                ],
                "with --tracker sam2",
            )
            if not args.model:
                raise OptionsError("--tracker sam2 needs --model NAME, a SAM 2 model (e.g. sam2.1_hiera_tiny)")
            if args.random_weights and args.checkpoint:
                raise OptionsError(
                    f"--checkpoint {args.checkpoint} has no effect with --random-weights; drop one of them"
                )
        method = "sam2" if args.tracker == "sam2" else args.method or "persam-f"
        pred = str(check_output_folder(args.output or Path("persam-eval") / f"davis-{method}"))
        if args.json:
            check_output_file(args.json, "--json")
        if args.tracker == "sam2":
            _track_davis(args, pred, sequences)
        else:
            model = load_model(args)
            run_video(model, args.root, pred, finetune=method == "persam-f", sequences=sequences, progress=progress)
    args.pred = pred
    report = evaluate_davis(args.root, pred, sequences)
    glob = report.as_dict(per_object=False)
    per_object = {o.key: report.as_dict()[o.key] for o in report.objects}

    width = max([len("sequence_object")] + [len(k) for k in per_object])
    header = f"{'sequence_object':<{width}}" + "".join(f"  {c:>8}" for c in DAVIS_COLUMNS)
    print(header)
    print(_davis_row("global (mean)", glob, width))
    print("-" * len(header))
    for key, stats in per_object.items():
        print(_davis_row(key, stats, width))
    n_seq = len({o.sequence for o in report.objects})
    print(f"J&F {glob['J&F']:.3f}  ({len(report.objects)} objects in {n_seq} sequences)")

    if args.json:
        data = {
            "benchmark": "davis2017",
            **({"tracker": "sam2", "model": args.model} if args.tracker == "sam2" else {}),
            **glob,
            "objects": per_object,
            "sequences": sorted({o.sequence for o in report.objects}),
            "predictions": str(args.pred),
        }
        write_json(args.json, data)
    return 0
