"""``persam index``: encode an album once for fast, decoder-only segmenting."""

from __future__ import annotations

import argparse

from persam.cli.common import (
    add_model_options, add_quiet_option, check_output_file, load_model, progress, summary, user_errors, warn,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="encode photos once into an album index (resumable)")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="index file, e.g. album.idx")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored embedding precision (float32: masks identical to a direct run)")
    add_model_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.session.album import AlbumIndex
    from persam.io import find_images, load_image

    check_output_file(args.output)
    photos = [path.resolve() for path, _ in find_images(args.photos)]
    if not photos:
        raise ValueError("no image files among the photos; pass .jpg/.png files or folders holding them")
    album = AlbumIndex.open(args.output)
    model = load_model(args)
    album.bind(model.backend)
    todo = [p for p in photos if album.needs(p)]
    errors = user_errors()
    failed = 0
    for path in progress(todo, len(todo), "index"):
        try:
            encoded = model.backend.encode(load_image(path))
        except errors as exc:
            failed += 1
            warn(f"skipped {path}: {exc}")
            continue
        album.add(path, encoded, args.dtype)
    summary(args, f"persam index: {args.output}: {len(album.paths())} photos indexed ({len(todo) - failed} encoded now, "
                  f"{len(photos) - len(todo)} unchanged, {failed} skipped)")
    album.close()
    return 1 if failed else 0
