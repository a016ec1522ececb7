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
    user_errors,
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
        return run_ray(args, ray)
    from persam.io import find_images, load_image

    photos = [path.resolve() for path, _ in find_images(args.photos)]
    if not photos:
        raise OptionsError("no image files among the photos; pass .jpg/.png files or folders holding them")
    album = open_album(args.output)
    model = load_model(args)
    album.bind(model.backend)
    todo = [p for p in photos if album.needs(p)]
    damaged = report_damaged(album.damaged())
    errors = user_errors()
    failed = 0
    try:
        for path in progress(todo, len(todo), "index"):
            try:
                encoded = model.backend.encode(load_image(path))
            except errors as exc:
                failed += 1
                warn(f"skipped {path}: {exc}")
                album.skip(path, str(exc))
                continue
            album.add(path, encoded, args.dtype)
        indexed = len(album.paths())
    finally:
        album.close()
    summary(
        args,
        f"persam index: {args.output}: {indexed} photos indexed ({len(todo) - failed} encoded now, "
        f"{len(photos) - len(todo)} unchanged, {failed} skipped)",
    )
    return 1 if failed or damaged else 0


def report_damaged(damaged: list[tuple[str, str]]) -> int:
    """One line per damaged part file or entry of the store (its photos are encoded again); their number."""
    for file, reason in damaged:
        warn(f"{file}: {reason}; its photos are encoded again")
    return len(damaged)


def run_ray(args: argparse.Namespace, options) -> int:
    from persam.jobs.ray_index import run_index

    counts, pool = run_index(args.photos, args.output, model_spec(args), args.dtype, options)
    damaged = report_damaged(list(counts.damaged))
    for path, reason in counts.skipped_reasons:
        warn(f"skipped {path}: {reason}")
    summary(
        args,
        f"persam index: {args.output}: {counts.stored} photos indexed ({counts.encoded} encoded now, "
        f"{counts.unchanged} unchanged, {counts.skipped} skipped, {counts.failed} failed) "
        f"on Ray with {pool.workers} worker(s), {pool.gpus_per_worker:g} GPU(s) each",
    )
    return 1 if counts.skipped or counts.failed or damaged else 0
