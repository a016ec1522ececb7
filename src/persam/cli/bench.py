"""``persam bench``: time the encoder, one decoder pass and PerSAM / PerSAM-F on synthetic photos."""

from __future__ import annotations

import argparse
import sys

from persam.cli.common import DEVICE_HELP, check_output_file, device_name, model_help, model_name
from persam.errors import OptionsError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time the method's stages on synthetic photos",
        description=(
            "Median timings (after one warm-up run) of the image encoder, one multi-mask decoder pass, "
            "PerSAM and PerSAM-F on an encoded photo, the PerSAM-F fit, and the peak memory, "
            "on deterministic synthetic photos of N x round(0.75 N) pixels."
        ),
    )
    p.add_argument("--model", type=model_name, default="vit_t", metavar="NAME", help=model_help())
    p.add_argument("--checkpoint", metavar="PATH", help="local weights file instead of the download")
    p.add_argument("--random-weights", action="store_true", help="no weights at all: speed only, nothing is downloaded")
    p.add_argument("--device", type=device_name, metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 image encoder (default fp32)")
    p.add_argument(
        "--image-size", type=int, default=1024, metavar="N", help="long side of the synthetic photos (default 1024)"
    )
    p.add_argument(
        "--runs", type=int, default=5, metavar="N", help="timed runs per stage after one warm-up (default 5)"
    )
    p.add_argument(
        "--runtime",
        action="append",
        metavar="RUNTIME[:PRECISION]",
        help="compare the image encoder and a new photo end to end through this runtime (torch, openvino, "
        "onnxruntime; e.g. openvino:bf16; repeatable) with PyTorch fp32, in interleaved rounds on the CPU",
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    p.add_argument(
        "--tracker",
        choices=["sam2"],
        help="time SAM 2's video predictor instead (--model a SAM 2 model): a synthetic clip of --runs + 1 "
        "frames of 3 objects, --image-size wide; the median time per tracked frame",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="instead: photos/s of `persam index` on the local path and on a local Ray runtime with 1 and 2 "
        "workers, and Ray's overhead per photo (--runs interleaved rounds; needs persam[ray])",
    )
    p.add_argument("--photos", type=int, metavar="N", help="with --ray: photos per round (default 16)")
    p.add_argument(
        "--prior",
        choices=["matcher"],
        help="instead: the matcher prior's cost against PerSAM's on an encoded photo, in one interleaved run "
        "(SAM and DINOv2 encoder ms, decoder passes, ms beyond the encoders; needs persam[matcher])",
    )
    p.add_argument(
        "--dino",
        metavar="NAME",
        help="with --prior matcher: the DINOv2 (dinov2_vits14 ... dinov2_vitg14; default dinov2_vitl14, Matcher's)",
    )
    p.set_defaults(func=run)


def format_result(result) -> str:
    """The result as a small table (milliseconds, ratios to one decoder pass)."""
    weights = "random weights" if result.random_weights else "trained weights"
    h, w = result.image_hw
    lines = [
        f"persam bench: {result.model} ({weights}), {w}x{h} photos, {result.precision} on {result.device}, "
        f"torch {result.torch_version}, {result.threads} threads, median of {result.runs} runs",
        f"{'stage':<38} {'ms':>10}  {'x decoder':>9}",
    ]
    rows = [
        ("image encoder", result.encoder_s, None),
        ("decoder pass (multi-mask)", result.decoder_pass_s, 1.0),
        (
            "  the same, official modules",
            result.official_decoder_pass_s,
            result.official_decoder_pass_s / result.decoder_pass_s,
        ),
        ("PerSAM on an encoded photo", result.persam_extra_s, result.persam_extra_over_decoder),
        ("PerSAM-F on an encoded photo", result.persam_f_extra_s, result.persam_f_extra_over_decoder),
        (
            "part-aware prior, parts 1..5, encoded photo",
            result.parts_extra_s,
            result.parts_extra_s / result.decoder_pass_s,
        ),
        ("PerSAM, cached embedding (decode only)", result.decode_only_s, result.decode_only_over_decoder),
        ("PerSAM-F fit on an encoded reference", result.fit_s, None),
        (
            "video frame beyond the encoder, 3 objects (ratio: to the encoder)",
            result.video_extra_s,
            result.video_extra_over_encoder,
        ),
    ]
    if not result.decoder_fast_path:  # SAM 2: always the official modules, nothing to compare
        rows = [row for row in rows if row[0] != "  the same, official modules"]
    for name, seconds, ratio in rows:
        tail = f"{ratio:9.2f}" if ratio is not None else f"{'':>9}"
        lines.append(f"{name:<38} {seconds * 1000:10.2f}  {tail}")
    lines.append(
        f"part-aware prior beyond the encoder: {result.parts_over_persam:.2f} x PerSAM's "
        f"({result.parts_extra_s / result.decoder_pass_s:.1f} vs {result.persam_extra_over_decoder:.1f} decoder "
        "passes), "
        f"{100 * result.parts_transport_share:.1f}% of it optimal transport"
    )
    lines.append(f"{'peak resident memory':<38} {result.peak_rss_mb:8.0f} MB")
    lines.append(
        f"arithmetic: encoder {result.encoder_gflop:.2f} GFLOP, video frame beyond it {result.video_gflop:.2f} GFLOP "
        f"({result.video_gflop_over_encoder:.2f} x the encoder's)"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from persam.jobs.bench import run_benchmark

    if args.random_weights and args.checkpoint:
        raise OptionsError(
            f"--checkpoint {args.checkpoint} has no effect with --random-weights (nothing is loaded); drop one of them"
        )
    if args.json:
        check_output_file(args.json, "--json")
    if args.runs < 1:
        raise OptionsError(f"--runs must be at least 1, got {args.runs}")
    if args.image_size < 32:
        raise OptionsError(f"--image-size must be at least 32 pixels, got {args.image_size}")
    on_stage = _stage_line if sys.stderr.isatty() else None

    if args.ray:
        if args.tracker:
            raise OptionsError("--tracker and --ray are two different benchmarks; run them one at a time")
        return _run_ray(args, on_stage)
    if args.photos is not None:
        raise OptionsError("--photos has no effect without --ray; drop it")
    if args.prior:
        return _run_matcher(args, on_stage)
    if args.dino:
        raise OptionsError("--dino has no effect without --prior matcher; drop it")
    if args.runtime:
        return _run_runtimes(args, on_stage)
    if args.tracker:
        return _run_tracker(args)

    result = run_benchmark(
        args.model,
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        random_weights=args.random_weights,
        image_size=args.image_size,
        runs=args.runs,
        on_stage=on_stage,
    )
    return _report(args, result, format_result, on_stage)


def _stage_line(name: str) -> None:
    """The stage being timed, on one terminal line."""
    print(f"\r\033[Kpersam bench: {name} ...", end="", file=sys.stderr, flush=True)


def _run_runtimes(args: argparse.Namespace, on_stage) -> int:
    from persam.jobs.runtime_bench import format_runtime_result, parse_config, run_runtime_benchmark

    if args.device not in (None, "cpu"):
        raise OptionsError("--runtime compares encoders on the CPU; leave out --device or use --device cpu")
    configs = [parse_config(text, args.precision) for text in args.runtime]
    result = run_runtime_benchmark(
        args.model,
        args.checkpoint,
        configs=configs,
        random_weights=args.random_weights,
        image_size=args.image_size,
        runs=args.runs,
        on_stage=on_stage,
    )
    return _report(args, result, format_runtime_result, on_stage)


def _run_matcher(args: argparse.Namespace, on_stage) -> int:
    """``persam bench --prior matcher``: the matcher prior against PerSAM (``persam.jobs.matcher_bench``)."""
    from persam.backends.dinov2 import DINO_MODELS
    from persam.cli.common import refuse, require_extra
    from persam.jobs.matcher_bench import format_matcher_bench, run_matcher_bench

    for module in ("scipy", "ot"):
        require_extra(module, "--prior matcher")
    given = [flag for flag, on in (("--runtime", args.runtime), ("--tracker", args.tracker), ("--ray", args.ray)) if on]
    refuse(given + (["--precision"] if args.precision != "fp32" else []), "with --prior matcher")
    if args.dino is not None and args.dino not in DINO_MODELS:
        raise OptionsError(f"unknown DINOv2 model {args.dino!r}; choose one of {', '.join(DINO_MODELS)}")
    result = run_matcher_bench(
        args.model,
        args.checkpoint,
        dino=args.dino,
        device=args.device,
        random_weights=args.random_weights,
        image_size=args.image_size,
        runs=args.runs,
        on_stage=on_stage,
    )
    return _report(args, result, format_matcher_bench, on_stage)


def _run_tracker(args: argparse.Namespace) -> int:
    """``persam bench --tracker sam2``: SAM 2's time per tracked frame (``persam.jobs.tracker_bench``)."""
    import warnings

    from persam.jobs.tracker_bench import bench_tracker, format_tracker_bench
    from persam.session.video_predictor import load_video_predictor

    if args.precision != "fp32":
        raise OptionsError("--precision has no effect with --tracker sam2 (it tracks in fp32); drop it")
    warnings.filterwarnings("ignore", message=r"cannot import name '_C'")  # sam2 without its compiled hole filling
    if args.random_weights:
        import torch

        torch.manual_seed(0)
    predictor, _ = load_video_predictor(
        args.model, args.checkpoint, random_weights=args.random_weights, device=args.device
    )
    result = bench_tracker(
        predictor, args.model, random_weights=args.random_weights, size=args.image_size, frames=args.runs + 1
    )
    return _report(args, result, format_tracker_bench, None)


def _run_ray(args: argparse.Namespace, on_stage) -> int:
    from persam.cli.common import model_spec, refuse, require_extra
    from persam.jobs.ray_bench import format_ray_result, run_ray_bench

    require_extra("ray", "--ray")
    refuse(["--runtime"] if args.runtime else [], "with --ray")
    photos = 16 if args.photos is None else args.photos
    if photos < 1:
        raise OptionsError(f"--photos must be at least 1, got {photos}")
    result = run_ray_bench(
        model_spec(args), photos=photos, image_size=args.image_size, rounds=args.runs, on_stage=on_stage
    )
    return _report(args, result, format_ray_result, on_stage)


def _report(args: argparse.Namespace, result, format_fn, on_stage) -> int:
    """Clear the stage line, print ``format_fn(result)`` and write ``--json``; exit status 0."""
    from persam.cli.common import write_json

    if on_stage is not None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(format_fn(result))
    if args.json:
        from persam.jobs.machine import describe_machine

        payload = {"command": bench_command(args), "machine": describe_machine(args.device), **result.to_dict()}
        write_json(args.json, payload)
    return 0


def bench_command(args: argparse.Namespace) -> str:
    """The ``persam bench`` command line that repeats this run, options in a fixed order (for results files)."""
    import shlex

    words = ["persam", "bench", "--model", args.model]
    if args.checkpoint:
        words += ["--checkpoint", args.checkpoint]
    if args.random_weights:
        words.append("--random-weights")
    if args.device:
        words += ["--device", args.device]
    if args.precision != "fp32":
        words += ["--precision", args.precision]
    words += ["--image-size", str(args.image_size), "--runs", str(args.runs)]
    for runtime in args.runtime or ():
        words += ["--runtime", runtime]
    if args.tracker:
        words += ["--tracker", args.tracker]
    if args.ray:
        words.append("--ray")
    if args.photos is not None:
        words += ["--photos", str(args.photos)]
    if args.prior:
        words += ["--prior", args.prior]
    if args.dino:
        words += ["--dino", args.dino]
    words += ["--json", args.json]
    return shlex.join(words)
