"""``persam segment``: find a personalized object in photos."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from persam.cli.common import add_model_options, load_model, progress, user_errors, warn
from persam.cli.references import add_reference_options, build_concept, check_reference_options

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from persam.jobs.outputs import Done


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a personalized object in new photos",
        description="Learn the object from reference photo(s) and mask(s), or load a saved concept, then write a mask for each target photo.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="image files or folders (searched recursively)")
    add_reference_options(p)
    p.add_argument("--concept", metavar="FILE", help="a concept saved by `persam personalize` (instead of --ref)")
    p.add_argument("--index", metavar="FILE", help="segment the photos of an album index (`persam index`): decoder only")
    p.add_argument("--max-instances", type=int, default=1, metavar="N", help="find up to N instances; writes a label map (1..N)")
    p.add_argument("--detect-absent", action="store_true", help="write an empty mask when the object is not in the photo")
    p.add_argument("--presence-threshold", type=float, metavar="S", help="similarity below which the object is absent (implies --detect-absent)")
    p.add_argument("--format", choices=["png", "coco"], default="png", help="coco: also write annotations.json with RLE masks")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--workers", type=int, metavar="N",
                   help="photos segmented at once, sharing the CPU threads (default: 2 on a CPU with 2+ cores, else 1)")
    add_model_options(p)
    p.set_defaults(func=run)


def segment_one(concept, image, args: argparse.Namespace) -> "tuple[np.ndarray, list]":
    """(mask or label map, results) of one photo, as the options ask."""
    detect = args.detect_absent or args.presence_threshold is not None
    if args.max_instances > 1:
        found = concept.segment_instances(image, max_instances=args.max_instances, detect_absent=detect)
        return found.labels, found.instances
    result = concept.segment(image, detect_absent=detect)
    return result.mask, [result]


def default_workers(device) -> int:
    """Photos segmented at once: two on a CPU with at least two cores (the decoder's small
    matrix products use two cores poorly; two photos at a time do better), else one."""
    return 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


@contextlib.contextmanager
def worker_threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` threads; torch's own threads are shared out among them meanwhile."""
    import torch

    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def _ordered(items: Iterator[tuple[Future | None, Done | None]], ahead: int) -> Iterator[tuple[Future | None, Done | None]]:
    """Pass ``items`` through in order, keeping at most ``ahead`` of them submitted before they are consumed."""
    window: deque = deque()
    for item in items:
        window.append(item)
        if len(window) > ahead:
            yield window.popleft()
    while window:
        yield window.popleft()


def index_targets(paths: list[str]) -> list[tuple[Path, Path]]:
    """(photo, output stem) for indexed photos: stems relative to their common folder."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    return [(Path(p), Path(p).relative_to(root).with_suffix("")) for p in paths]


def run(args: argparse.Namespace) -> int:
    from persam.io import find_images, load_image
    from persam.jobs.outputs import Done, OutputOptions, Outputs, write_result

    check_reference_options(args)
    if args.index and args.targets:
        raise ValueError(f"pass either TARGET photos or --index {args.index} (its photos are the targets), not both")
    if args.index and args.concept and args.precision == "bf16":
        raise ValueError("--precision has no effect with --index and --concept (nothing is encoded: the index holds the "
                         "embeddings); drop it, or index the photos with `persam index --precision bf16`")
    if args.max_instances < 1:
        raise ValueError(f"--max-instances must be at least 1, got {args.max_instances}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.index:
        from persam.session.album import AlbumIndex

        album = AlbumIndex.open(args.index, create=False)
        targets = index_targets(album.paths())
    else:
        album = None
        targets = find_images(args.targets)
    if not targets:
        raise ValueError("no image files among the targets; pass .jpg/.png files or folders holding them (or --index FILE)")
    model = load_model(args)
    concept = build_concept(args, model)
    outputs = Outputs(Path(args.output), OutputOptions(args.max_instances, args.overlay, args.format == "coco"))
    errors = user_errors()
    workers = args.workers if args.workers is not None else default_workers(model.backend.device)

    def job(path: Path, stem: Path, pixels, image) -> Done:
        try:
            written, results = segment_one(concept, image, args)
        except errors as exc:
            return Done.skipped(path, exc)
        return write_result(outputs.root, path, stem, pixels, written, results, outputs.options)

    def submitted(pool):
        """Read each photo (or its stored embedding) here, segment and write it in the pool."""
        for path, stem in targets:
            try:
                if album is not None:
                    pixels = load_image(path) if args.overlay else None
                    image = album.encoded(path, model.backend)
                else:
                    pixels = image = load_image(path)
            except errors as exc:
                yield None, Done.skipped(path, exc)
                continue
            yield pool.submit(job, path, stem, pixels, image), None

    with worker_threads(workers) as pool:
        for future, done in progress(_ordered(submitted(pool), 2 * workers), len(targets), "segment"):
            done = done if future is None else future.result()
            if done.entry["status"] == "skipped":
                warn(f"skipped {done.entry['input']}: {done.entry['reason']}")
            outputs.add(done)
    outputs.save(concept.method, model.backend.name)
    failed = sum(e["status"] == "skipped" for e in outputs.entries)
    if failed:
        warn(f"{failed} of {len(targets)} targets skipped; the others were written to {outputs.root} (see manifest.json)")
    return 1 if failed else 0
