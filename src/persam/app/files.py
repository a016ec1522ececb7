"""Reading what visitors upload: photos (through persam.io's reader and its pixel limit), zips of photos, masks.

Every error is a ``ValueError`` naming the upload (its file name, not the
server's temporary path) and what to do instead.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from persam.errors import InputError, PersamError

#: Most photos taken out of one uploaded zip, and their total uncompressed size.
MAX_ZIP_PHOTOS = 2000
MAX_ZIP_BYTES = 2 * 1024**3


def display_name(path: str | os.PathLike) -> str:
    """The upload's own file name (uploads live under temporary folders)."""
    return Path(path).name


def _guarded(read, path: str | os.PathLike):
    """Run ``read(path)`` (persam.io's readers: one-line errors, the pixel limit); name the upload, not the
    server path."""
    try:
        return read(path)
    except PersamError as exc:
        raise exc.reworded(str(exc).replace(str(path), display_name(path))) from None


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an uploaded photo."""
    from persam.io import load_image

    return _guarded(load_image, path)


def read_mask(path: str | os.PathLike, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool of an uploaded mask (nonzero = object), checked against the photo's (H, W)."""
    from persam.io import read_binary_mask

    mask = _guarded(read_binary_mask, path)
    if mask.shape != tuple(hw):
        raise InputError(
            f"{display_name(path)}: the mask is {mask.shape[1]}x{mask.shape[0]} but the photo is "
            f"{hw[1]}x{hw[0]}; upload the mask drawn on this photo"
        )
    if not mask.any():
        raise InputError(f"{display_name(path)}: the mask is empty; mark the object with nonzero pixels (or click it)")
    if mask.all():
        raise InputError(f"{display_name(path)}: the mask covers the whole photo; mark only the object")
    return mask


def expand_uploads(paths: list[str | os.PathLike], workdir: Path) -> list[tuple[Path, str]]:
    """(photo path, output stem) for uploaded photos and the photos inside uploaded zips.

    Zip members keep their folder in the stem (``a/b.jpg`` -> ``a/b``); stems that collide are made
    unique by the batch with the one naming rule (``persam.io.naming``); names
    climbing out of the zip (``..``, absolute) are refused. Other files are
    kept: reading them later reports the ones that are not photos.

    Raises:
        ValueError: a zip that does not open, holds no photo, or is too large.
    """
    from persam.io import IMAGE_EXTENSIONS

    out: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.suffix.lower() != ".zip":
            out.append((path, path.stem))
            continue
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise InputError(f"{path.name}: not a readable zip; upload photos or a .zip of photos") from None
        with archive:
            members = [
                m
                for m in archive.infolist()
                if not m.is_dir()
                and PurePosixPath(m.filename).suffix.lower() in IMAGE_EXTENSIONS
                and not PurePosixPath(m.filename).name.startswith(".")
            ]
            if not members:
                raise InputError(f"{path.name}: no photo (.jpg, .png, ...) inside; zip the photos themselves")
            if len(members) > MAX_ZIP_PHOTOS or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise InputError(
                    f"{path.name}: more than {MAX_ZIP_PHOTOS} photos or {MAX_ZIP_BYTES >> 30} GiB inside; split it"
                )
            target = workdir / f"unzipped-{len(out)}"
            for member in members:
                inner = PurePosixPath(member.filename)
                if inner.is_absolute() or ".." in inner.parts:
                    raise InputError(
                        f"{path.name}: member {member.filename!r} points outside the zip; re-create the zip"
                    )
                dest = target.joinpath(*inner.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as src, open(dest, "wb") as dst:
                        dst.write(src.read())
                except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
                    raise InputError(
                        f"{path.name}: member {member.filename!r} does not unpack ({exc}); re-create the zip"
                    ) from None
                out.append((dest, inner.with_suffix("").as_posix()))
    return out
