"""The manifest and resume, once, for photos (``persam segment``, the web app, Ray) and video frames.

A batch rewrites ``manifest.json`` atomically as it goes (``Pacer``: after each item, or at most about
once a second for fast items), with ``"complete": false`` until the end, so a run stopped by Ctrl-C, an
error or a kill leaves a consistent manifest. A later run reuses what an earlier one finished only when
the earlier run's spec key (``persam.engine.resume``) equals its own: per photo (each entry records the
key it was made with, so a manifest never vouches for a photo another spec made), and for video frames
per folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from persam.jobs.outputs import ANNOTATIONS, MANIFEST, Done, OutputOptions

#: Manifest key of the spec key each written entry was made with.
SPEC_KEY = "spec_key"


class Pacer:
    """Calls ``write`` now, or (``now=False``) only when the last write is older than ``every`` seconds and
    than ten times its own duration, so a big batch spends at most about a tenth of its time on it."""

    def __init__(self, write: Callable[[], None], every: float = 1.0) -> None:
        self.write, self.every = write, every
        self.last = -float("inf")
        self.cost = 0.0

    def __call__(self, now: bool = True) -> None:
        start = time.monotonic()
        if not now and start - self.last < max(self.every, 10 * self.cost):
            return
        self.write()
        end = time.monotonic()
        self.last, self.cost = end, end - start


def read_manifest(root: str | os.PathLike) -> dict | None:
    """``root/manifest.json`` as a dict, or None when it is missing or unreadable (then nothing is reused)."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _coco_records(root: Path) -> dict[str, tuple[dict, list[dict]]] | None:
    try:
        coco = json.loads((root / ANNOTATIONS).read_text(encoding="utf-8"))
        by_id, records = {}, {}
        for image in coco["images"]:
            record = ({k: v for k, v in image.items() if k != "id"}, [])
            by_id[image["id"]] = record
            records[image["file_name"]] = record
        for ann in coco["annotations"]:
            by_id[ann["image_id"]][1].append({k: v for k, v in ann.items() if k not in ("id", "image_id")})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return records


def finished(root: str | os.PathLike, key: str, options: OutputOptions) -> dict[str, Done]:
    """What earlier runs into ``root`` completed with the spec key ``key``: {input: Done}.

    A photo counts when ``manifest.json`` lists it as written with this ``key`` and its mask (and overlay,
    with ``options.overlay``) exist, and, with ``options.coco``, its records are in ``annotations.json``.
    Anything unreadable counts as not done.
    """
    root = Path(root)
    manifest = read_manifest(root)
    entries = manifest.get("inputs") if manifest is not None else None
    if not isinstance(entries, list):
        return {}
    records = _coco_records(root) if options.coco else {}
    if records is None:
        return {}
    done = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("status") != "written" or entry.get(SPEC_KEY) != key:
            continue
        if not isinstance(entry.get("input"), str):
            continue
        files = [entry.get("mask")] + ([entry.get("overlay")] if options.overlay else [])
        if not all(isinstance(f, str) and (root / f).is_file() for f in files):
            continue
        if options.coco and entry.get("input") not in records:
            continue
        done[entry["input"]] = Done(entry, records.get(entry["input"]) if options.coco else None)
    return done


def finished_frames(masks_dir: Path, settings: dict) -> int:
    """How many leading frames an earlier run with ``settings`` finished in ``masks_dir`` (0: none, or
    other settings)."""
    manifest = read_manifest(masks_dir)
    count = manifest.get("frames") if manifest is not None and manifest.get("settings") == settings else None
    if not isinstance(count, int) or count < 0:
        return 0
    for index in range(count):  # a frame deleted since: segment on from there
        if not (masks_dir / f"{index:05d}.png").is_file():
            return index
    return count
