"""Encoding photos into an album index (``persam.session.album`` / ``persam.session.store``): the one loop
that ``persam index`` and the Label Studio front end both run.

Only the photos the index ``needs`` (missing, changed, or with a damaged entry) are encoded; a photo that
cannot be read is recorded as skipped with its reason and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Encoded:
    """What one pass did.

    Attributes:
        encoded: photos encoded and stored now.
        unchanged: photos the index already held as they are.
        skipped: (photo, reason) of photos that could not be read.
    """

    encoded: int
    unchanged: int
    skipped: tuple[tuple[str, str], ...]


def _plain(items: Iterable, total: int, what: str) -> Iterator:
    yield from items


def encode_into(
    album,
    model,
    photos: list[Path],
    dtype: Literal["float16", "float32"] = "float16",
    *,
    dino=None,
    everything: bool = False,
    warn: Callable[[str], None] = lambda line: None,
    progress: Callable = _plain,
    mode: str = "throughput",
) -> Encoded:
    """Encode the ``photos`` that ``album`` needs (all of them with ``everything``) and store them.

    Args:
        album: an open index, bound to ``model``'s backend.
        model: the session model (``PersamModel``) whose image encoder runs.
        photos: photo files (the index's names for them: pass resolved paths).
        dtype: stored embedding precision.
        dino: also store each photo's DINOv2 patch features (``persam.session.features``).
        everything: encode every photo, needed or not (an index gaining DINOv2 features).
        warn: one line per photo skipped.
        progress: wraps the photos encoded (a progress bar).
        mode: "throughput" (the runtime's throughput mode where it has one) or "latency"
            (``persam.backends.throughput.encode_in_order``).
    """
    from persam.backends.throughput import encode_in_order
    from persam.errors import PersamError
    from persam.io import load_image
    from persam.session.features import dino_array

    needed = [p for p in photos if album.needs(p)]  # also finds (and lists) damaged entries
    todo = list(photos) if everything else needed
    skipped = []
    encoded_photos = encode_in_order(model.backend, todo, load_image, mode)
    for path, pixels, encoded in progress(encoded_photos, len(todo), "index"):
        try:
            if isinstance(encoded, Exception):
                raise encoded  # a PersamError is the photo's own (skipped); any other is a bug
            if dino is not None:
                encoded.features["dinov2"] = dino_array(dino, pixels)
        except PersamError as exc:
            warn(f"skipped {path}: {exc}")
            album.skip(path, str(exc))
            skipped.append((str(path), str(exc)))
            continue
        album.add(path, encoded, dtype)
    return Encoded(len(todo) - len(skipped), len(photos) - len(todo), tuple(skipped))
