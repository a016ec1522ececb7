"""``persam index``: encode an album once for fast, decoder-only segmenting.

The index is a Parquet embedding store (a folder or URI, ``persam.session.store``; needs pyarrow, which
comes with persam[ray]) or, for an ``.idx`` file, the single-file SQLite index (``persam.session.album``).
``--ray`` runs the indexing as a Ray Data pipeline into a store (``persam.jobs.ray_index``).
"""

from __future__ import annotations

import argparse

from persam.cli.common import (
    add_model_options,
    add_quiet_option,
    add_ray_options,
    check_output_file,
    load_model,
    model_spec,
    progress,
    ray_options,
    require_extra,
    summary,
    warn,
)
from persam.errors import OptionsError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="encode photos once into an album index (resumable)")
    p.add_argument(
        "photos",
        nargs="+",
        metavar="PHOTO",
        help="image files or folders (searched recursively); with --ray also URIs (s3://...)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="STORE",
        help="a folder or URI: Parquet embedding store (needs pyarrow); a FILE.idx: SQLite index",
    )
    p.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default="float16",
        help="stored embedding precision (float32: masks identical to a direct run)",
    )
    p.add_argument(
        "--features",
        choices=["dinov2"],
        default=None,
        help="also store each photo's DINOv2 patch features, so segment --prior matcher --index runs no encoder",
    )
    p.add_argument(
        "--encode",
        choices=["throughput", "latency"],
        default=None,
        help="throughput (default): the runtime's throughput mode where it has one (OpenVINO: several "
        "streams, one photo each; photos read while others encode; at most 2 x streams photos held); "
        "latency: one photo at a time with every thread; the embeddings are the same; not with --ray",
    )
    add_model_options(p)
    add_ray_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.session.store import is_store, open_album

    ray = ray_options(args)
    if is_store(args.output):
        require_extra("pyarrow", f"the embedding store {args.output}")
    elif ray is not None:
        raise OptionsError(
            f"--ray writes a Parquet embedding store (a folder or URI), not the SQLite file {args.output}; "
            "pass a folder name"
        )
    else:
        check_output_file(args.output)
    if ray is not None:
        if args.encode is not None:
            raise OptionsError(
                "--encode chooses the local encoder's mode; on Ray each actor encodes its photos in turn: "
                "leave --encode out with --ray",
                field="encode",
            )
        if args.features is not None or holds_dino(args.output):
            raise OptionsError(
                "DINOv2 features (--features, or a store that holds them) are not indexed with --ray yet; "
                "index without --ray",
                field="features",
            )
        return run_ray(args, ray)
    from persam.io import find_images
    from persam.jobs.indexing import encode_into
    from persam.session.features import record_dino

    photos = [path.resolve() for path, _ in find_images(args.photos)]
    if not photos:
        raise OptionsError("no image files among the photos; pass .jpg/.png files or folders holding them")
    album = open_album(args.output)
    model = load_model(args)
    album.bind(model.backend)
    try:
        dino, fresh = dino_features(args, album, model, photos)  # photos indexed before hold no DINOv2 features yet
        done = encode_into(
            album,
            model,
            photos,
            args.dtype,
            dino=dino,
            everything=fresh,
            warn=warn,
            progress=progress,
            mode=args.encode or "throughput",
        )
        damaged = report_damaged(album.damaged())
        if fresh:
            record_dino(album, dino)
        indexed = len(album.paths())
    finally:
        album.close()
    failed = len(done.skipped)
    summary(
        args,
        f"persam index: {args.output}: {indexed} photos indexed ({done.encoded} encoded now, "
        f"{done.unchanged} unchanged, {failed} skipped)",
    )
    return 1 if failed or damaged else 0


def holds_dino(output: str) -> bool:
    """Whether the store ``output`` already exists and holds DINOv2 features."""
    from persam.errors import MissingInputError
    from persam.session.features import recorded_dino
    from persam.session.store import open_album

    try:
        album = open_album(output, create=False)
    except MissingInputError:
        return False
    try:
        return recorded_dino(album) is not None
    finally:
        album.close()


def dino_features(args: argparse.Namespace, album, model, photos: list) -> tuple:
    """(the DINOv2 whose features the index stores, or None; whether the index records none yet).

    An index that holds DINOv2 features gets them for every photo added, ``--features`` given or not.
    """
    from persam.session.features import check_dino, recorded_dino

    if args.features is None and recorded_dino(album) is None:
        return None, False
    dino = model.feature_backbone()
    fresh = check_dino(album, dino)
    others = set(album.paths()) - {str(p) for p in photos}
    if fresh and others:
        raise OptionsError(
            f"{args.output}: holds {len(others)} photos without DINOv2 features that are not among the photos "
            "given; give them too, or index into a new file or folder",
            field="features",
        )
    return dino, fresh


def report_damaged(damaged: list[tuple[str, str]]) -> int:
    """One line per damaged part file or entry of the store (its photos are encoded again); their number."""
    for file, reason in damaged:
        warn(f"{file}: {reason}; its photos are encoded again")
    return len(damaged)


def run_ray(args: argparse.Namespace, options) -> int:
    from persam.jobs.ray_common import DROPPED
    from persam.jobs.ray_index import run_index

    counts, pool = run_index(args.photos, args.output, model_spec(args), args.dtype, options)
    damaged = report_damaged(list(counts.damaged))
    for path, reason in counts.skipped_reasons:
        warn(f"skipped {path}: {reason}")
    for path in counts.failed_paths:
        warn(f"failed {path}: not stored, {DROPPED}")
    summary(
        args,
        f"persam index: {args.output}: {counts.stored} photos indexed ({counts.encoded} encoded now, "
        f"{counts.unchanged} unchanged, {counts.skipped} skipped, {counts.failed} failed) "
        f"on Ray with {pool.workers} worker(s), {pool.gpus_per_worker:g} GPU(s) each",
    )
    return 1 if counts.skipped or counts.failed or damaged else 0
