"""``persam index``: encode an album once for fast, decoder-only segmenting."""

from __future__ import annotations

import argparse

from persam.cli.common import add_model_options, load_model, progress, user_errors, warn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="encode photos once into an album index (resumable)")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="index file, e.g. album.idx")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored embedding precision (float32: masks identical to a direct run)")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.session.album import AlbumIndex
    from persam.io import find_images, load_image

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
    print(f"{args.output}: {len(album.paths())} photos indexed ({len(todo) - failed} encoded now, {len(photos) - len(todo)} unchanged)")
    album.close()
    return 1 if failed else 0
