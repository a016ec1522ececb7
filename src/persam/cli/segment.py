"""``persam segment``: find a personalized object in photos.

Batch behaviour: every check that needs no model runs first (paths, output folder, optional packages);
photos under the output folder are not inputs; output names never collide (``persam.jobs.outputs``);
``manifest.json`` is rewritten (atomically) as photos finish (after each one, or every second for fast
photos in big batches) with ``"complete": false`` until the end, so a run stopped by Ctrl-C, an error or a
kill leaves a consistent manifest, and the same command again skips the photos
already written with the same settings (``--overwrite`` redoes them).

``--workers N`` shares torch's threads among N photos at a time. Matrix products summed over a different
number of threads round differently, so scores may differ from a ``--workers 1`` run in the last digits
(seen: 1e-6); masks agree to IoU >= 0.999 and scores within 1e-4 (tests/test_cli_beyond.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from persam.cli.common import (
    add_model_options,
    add_quiet_option,
    add_ray_options,
    check_inputs_exist,
    check_output_folder,
    load_model,
    model_spec,
    progress,
    ray_options,
    require_extra,
    summary,
    user_errors,
    warn,
)
from persam.cli.references import add_reference_options, build_concept, check_reference_options, prompt_reference
from persam.errors import OptionsError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from persam.jobs.outputs import Done


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a personalized object in new photos",
        description="Learn the object from reference photo(s) and mask(s), or load a saved concept, "
        "then write a mask for each target photo.",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help="image files or folders (searched recursively)")
    add_reference_options(p)
    p.add_argument("--concept", metavar="FILE", help="a concept saved by `persam personalize` (instead of --ref)")
    p.add_argument(
        "--index",
        metavar="STORE",
        help="segment the photos of an album index (`persam index`: a store folder or URI, "
        "or an .idx file): decoder only",
    )
    p.add_argument(
        "--max-instances", type=int, default=1, metavar="N", help="find up to N instances; writes a label map (1..N)"
    )
    p.add_argument(
        "--detect-absent", action="store_true", help="write an empty mask when the object is not in the photo"
    )
    p.add_argument(
        "--presence-threshold",
        type=float,
        metavar="S",
        help="similarity below which the object is absent (implies --detect-absent)",
    )
    p.add_argument(
        "--format", choices=["png", "coco"], default="png", help="coco: also write annotations.json with RLE masks"
    )
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="photos segmented at once, sharing the CPU threads (default: 2 on a CPU with 2+ cores, else 1); "
        "scores may differ from --workers 1 in the 5th decimal",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="segment every photo again (default: skip those a previous run with the same settings wrote to OUT)",
    )
    add_quiet_option(p)
    add_model_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)


def segment_one(concept, image, args: argparse.Namespace) -> tuple[np.ndarray, list]:
    """(mask or label map, results) of one photo, as the options ask."""
    from persam.jobs.ray_segment import segment_photo

    return segment_photo(concept, image, args.max_instances, args.detect_absent or args.presence_threshold is not None)


def default_workers(device) -> int:
    """Photos segmented at once: two on a CPU with at least two cores (the decoder's small
    matrix products use two cores poorly; two photos at a time do better), else one."""
    return 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


@contextlib.contextmanager
def worker_threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` threads; torch's own threads are shared out among them meanwhile.
    On an error or Ctrl-C, photos not started are cancelled and those running are waited for."""
    import torch

    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(max(1, threads // workers))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        torch.set_num_threads(threads)


def _ordered(
    items: Iterator[tuple[Future | None, Done | None]], ahead: int, window: deque
) -> Iterator[tuple[Future | None, Done | None]]:
    """Pass ``items`` through in order, keeping at most ``ahead`` of them submitted before they are consumed
    (held in ``window``, which the caller may read after an interruption)."""
    for item in items:
        window.append(item)
        if len(window) > ahead:
            yield window.popleft()
    while window:
        yield window.popleft()


class _Stopped(Exception):
    """A photo not started because of Ctrl-C."""


@contextlib.contextmanager
def stopped_by_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """Meanwhile, a first Ctrl-C (SIGINT) only sets ``stop`` (the batch stops after the photos being
    segmented); a second one interrupts at once. Only in the main thread (where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _finished(item: tuple[Future | None, Done | None]) -> bool:
    future = item[0]
    return future is None or (future.done() and not future.cancelled() and future.exception() is None)


def index_targets(paths: list[str]) -> list[tuple[Path, Path]]:
    """(photo, output stem) for indexed photos: stems relative to their common folder."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    return [(Path(p), Path(p).relative_to(root).with_suffix("")) for p in paths]


def check_args(args: argparse.Namespace) -> Path:
    """Every check that needs no model (exit 2 on failure); returns the output folder."""
    check_reference_options(args)
    if args.index and args.targets:
        raise OptionsError(f"pass either TARGET photos or --index {args.index} (its photos are the targets), not both")
    if args.index and args.concept and (args.precision is not None or args.runtime is not None):
        option = "--precision" if args.precision is not None else "--runtime"
        raise OptionsError(
            f"{option} has no effect with --index and --concept (nothing is encoded: the index holds the "
            f"embeddings); drop it, or index the photos with `persam index {option} ...`"
        )
    if args.max_instances < 1:
        raise OptionsError(f"--max-instances must be at least 1, got {args.max_instances}")
    if args.workers is not None and args.workers < 1:
        raise OptionsError(f"--workers must be at least 1, got {args.workers}")
    out = check_output_folder(args.output)
    if args.format == "coco":
        require_extra("pycocotools", "--format coco")
    local_index = args.index if args.index and "://" not in args.index else None
    check_inputs_exist([*args.ref, *args.ref_mask, args.concept, local_index, args.checkpoint, *args.targets], "input")
    if args.index and Path(args.index).is_file() and Path(args.index).stat().st_size == 0:
        raise OptionsError(
            f"{args.index}: empty file, not an album index; build it with `persam index PHOTOS... -o {args.index}`"
        )
    return out


def run_settings(args: argparse.Namespace, backend) -> dict:
    """What decides the masks (manifest "settings"): a re-run skips finished photos only if these are equal."""
    from persam.backends.checkpoints import file_sha256

    if args.concept:
        source = {"concept": file_sha256(args.concept)}
    elif (prompted := prompt_reference(args)) is not None:  # SAM made the reference mask from these prompts
        source = {
            "references": [[file_sha256(prompted[0]), json.loads(json.dumps(prompted[1]))]],
            "label": None,
            "finetune": args.finetune,
            "without": sorted(args.without),
        }
    else:
        from persam.cli.references import reference_pairs

        images, masks = reference_pairs(args.ref, args.ref_mask)
        source = {
            "references": [[file_sha256(i), file_sha256(m)] for i, m in zip(images, masks)],
            "label": args.label,
            "finetune": args.finetune,
            "without": sorted(args.without),
            "prior": args.prior,
            "parts": None if args.parts is None else list(args.parts),
        }
    return {
        **source,
        "model": backend.name,
        "checkpoint_sha256": backend.checkpoint_sha256,
        "precision": backend.precision,
        "runtime": backend.runtime,
        "index": bool(args.index),
        "max_instances": args.max_instances,
        "presence_threshold": args.presence_threshold,
        "detect_absent": bool(args.detect_absent or args.presence_threshold is not None),
        "format": args.format,
        "overlay": args.overlay,
    }


def gather_targets(args: argparse.Namespace, out: Path, album) -> list[tuple[Path, Path]]:
    """(photo, unique output stem) in input order: each photo once, none under the output folder."""
    from persam.io import find_images
    from persam.jobs.outputs import output_stems, outside

    found = index_targets(album.paths()) if album is not None else find_images(args.targets)
    seen, unique = set(), []
    for path, stem in found:
        key = Path(path).resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, stem))
    if len(unique) < len(found):
        warn(f"{len(found) - len(unique)} photos given more than once are segmented once")
    kept, inside = outside(unique, out)
    if inside:
        warn(f"{inside} photos under the output folder {out} are left out of the inputs")
    if not kept:
        raise OptionsError(
            "no image files among the targets; pass .jpg/.png files or folders holding them (or --index FILE)"
        )
    return list(zip([p for p, _ in kept], output_stems(kept)))


def run(args: argparse.Namespace) -> int:
    from persam.backends.checkpoints import file_sha256
    from persam.io import load_image
    from persam.jobs.outputs import Done, OutputOptions, Outputs, finished, write_result

    out = check_args(args)
    ray = ray_options(args)
    album = None
    if args.index:
        from persam.session.store import is_store, open_album, require_readable

        if ray is not None and not is_store(args.index):
            raise OptionsError(
                f"--ray reads a Parquet embedding store, not the SQLite file {args.index}; "
                "index the photos into a folder with `persam index PHOTOS... -o STORE`"
            )
        if is_store(args.index):
            require_extra("pyarrow", f"the embedding store {args.index}")
        album = open_album(args.index, create=False)
        require_readable(album)
    elif ray is not None:
        raise OptionsError(
            "--ray segments the photos of an embedding store: index them first "
            "(`persam index PHOTOS... -o STORE --ray`), then pass --index STORE"
        )
    if ray is not None and args.workers is not None:
        raise OptionsError("--workers has no effect with --ray (the Ray pool's size is --ray-workers); drop it")
    targets = gather_targets(args, out, album)
    damaged = damaged_parts(album)
    model = load_model(args)
    if album is not None:
        album.bind(model.backend)  # an index of another model or checkpoint: one error, not a skip per photo
    concept = build_concept(args, model)
    settings = run_settings(args, model.backend)
    outputs = Outputs(out, OutputOptions(args.max_instances, args.overlay, args.format == "coco"))
    if stale := outputs.remove_stale_temps([stem for _, stem in targets]):
        warn(f"removed {len(stale)} unfinished temporary file(s) that an interrupted run left in {out}")
    previous = {} if args.overwrite else finished(out, settings, outputs.options)
    if ray is not None:
        return run_ray(args, ray, album, targets, concept, settings, outputs, previous, damaged)
    errors = user_errors()
    workers = args.workers if args.workers is not None else default_workers(model.backend.device)
    reused = 0

    pace = {"last": 0.0, "cost": 0.0}

    def save(complete: bool, now: bool = True) -> None:
        """Write the manifest; with ``now=False`` only if the last write is older than 1 s and than 10 times
        its own duration (big batches spend at most about a tenth of their time rewriting it)."""
        start = time.monotonic()
        if not now and start - pace["last"] < max(1.0, 10 * pace["cost"]):
            return
        outputs.save(concept.method, model.backend.name, settings=settings, complete=complete)
        pace["last"], pace["cost"] = time.monotonic(), time.monotonic() - start

    stop = threading.Event()  # set by Ctrl-C: no photo starts after it

    def job(path: Path, stem: Path, pixels, image, sha: str) -> Done:
        if stop.is_set():
            raise _Stopped
        try:
            written, results = segment_one(concept, image, args)
        except errors as exc:
            return Done.skipped(path, exc)
        done = write_result(outputs.root, path, stem, pixels, written, results, outputs.options)
        done.entry["sha256"] = sha
        return done

    def submitted(pool):
        """Read each photo (or its stored embedding) here, segment and write it in the pool."""
        nonlocal reused
        for path, stem in targets:
            if stop.is_set():
                return
            try:
                sha = (
                    file_sha256(path) if album is None or Path(path).is_file() else None
                )  # indexed: the embedding suffices
                before = previous.get(str(path))
                if (
                    before is not None
                    and sha is not None
                    and before.entry.get("sha256") == sha
                    and before.entry["mask"] == stem.with_suffix(".png").as_posix()
                ):
                    reused += 1
                    yield None, before
                    continue
                if album is not None:
                    pixels = load_image(path) if args.overlay else None
                    image = album.encoded(path, model.backend)
                else:
                    pixels = image = load_image(path)
            except errors + (OSError,) as exc:
                yield None, Done.skipped(path, exc)
                continue
            yield pool.submit(job, path, stem, pixels, image, sha), None

    def result(item: tuple[Future | None, Done | None]) -> Done:
        future, done = item
        return done if future is None else future.result()

    def add(done: Done) -> None:
        if done.entry["status"] == "skipped":
            warn(f"skipped {done.entry['input']}: {done.entry['reason']}")
        outputs.add(done)
        save(complete=False, now=False)

    window: deque = deque()
    current: list = []  # the item being waited for, while it is
    try:
        with stopped_by_ctrl_c(stop), worker_threads(workers) as pool:
            for item in progress(_ordered(submitted(pool), 2 * workers, window), len(targets), "segment"):
                current[:] = [item]
                done = result(item)
                current.clear()
                add(done)
                if stop.is_set():
                    raise KeyboardInterrupt
    except BaseException:  # Ctrl-C or an unexpected error
        # the pool has finished the photos it was segmenting and dropped the others: record those, in order
        for item in [*current, *window]:
            if not _finished(item):
                break
            add(result(item))
        save(complete=False)
        raise
    finally:
        if album is not None:
            album.close()
    for done in damaged:
        add(done)
    save(complete=True)
    counts = outputs.counts()
    earlier = f", {reused} by an earlier run; --overwrite redoes them" if reused else ""
    summary(
        args,
        f"persam segment: {counts['written']} written ({counts['absent']} without the object{earlier}), "
        f"{counts['skipped']} skipped; see {out / 'manifest.json'}",
    )
    return 1 if counts["skipped"] else 0


def damaged_parts(album) -> list:
    """A "skipped" manifest entry naming each damaged part file of ``album`` (its photos cannot be listed)."""
    from persam.errors import StoreError
    from persam.jobs.outputs import Done

    found = [] if album is None else album.damaged()
    return [
        Done.skipped(Path(f), StoreError(f"{f}: {why}; its photos are left out; index them again")) for f, why in found
    ]


def run_ray(
    args: argparse.Namespace, options, album, targets, concept, settings: dict, outputs, previous: dict, damaged: list
) -> int:
    """The --ray path: photos finished by an earlier run are reused, the others segmented on Ray
    (``persam.jobs.ray_segment``); the manifest is written here, in input order, by the same writer."""
    import tempfile

    from persam.jobs.ray_segment import run_segment

    hashes = album.hashes()
    album.close()
    stored = {str(Path(p)): p for p in hashes}  # Path() turns s3://b/x into s3:/b/x; the store's own names go on
    targets = [(stored.get(str(path), str(path)), stem) for path, stem in targets]
    todo, reused = [], 0
    for path, stem in targets:
        before = previous.get(path)
        if (
            before is None
            or before.entry.get("sha256") != hashes.get(path)
            or before.entry["mask"] != stem.with_suffix(".png").as_posix()
        ):
            todo.append((path, stem))
    if args.concept:
        concept_bytes = Path(args.concept).read_bytes()
    else:
        from persam.session.concept_file import save_concept

        with tempfile.TemporaryDirectory() as folder:
            concept_bytes = save_concept(concept, Path(folder) / "concept.persam").read_bytes()
    detect = bool(args.detect_absent or args.presence_threshold is not None)
    done: dict = {}
    try:
        done, pool = run_segment(
            args.index,
            todo,
            concept_bytes,
            model_spec(args),
            outputs.root,
            outputs.options,
            args.max_instances,
            detect,
            options,
            results=done,
        )
    finally:  # what finished is recorded, in input order, even when the pipeline failed
        waiting = set(todo)
        for path, stem in targets:
            if (path, stem) not in waiting:
                reused += 1
                outputs.add(previous[path])
            elif path in done:
                outputs.add(done[path])
        complete = len(outputs.entries) == len(targets)
        for entry in damaged:
            outputs.add(entry)
        outputs.save(concept.method, concept.model.backend.name, settings=settings, complete=complete)
    failed = [p for p, _ in todo if p not in done]
    for entry in outputs.entries:
        if entry["status"] == "skipped":
            warn(f"skipped {entry['input']}: {entry['reason']}")
    counts = outputs.counts()
    earlier = f", {reused} by an earlier run; --overwrite redoes them" if reused else ""
    summary(
        args,
        f"persam segment: {counts['written']} written ({counts['absent']} without the object{earlier}), "
        f"{counts['skipped']} skipped, {len(failed)} failed, on Ray with {pool.workers} worker(s); "
        f"see {outputs.root / 'manifest.json'}",
    )
    return 1 if counts["skipped"] or failed else 0
