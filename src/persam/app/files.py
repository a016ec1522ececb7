"""Reading what visitors upload: photos (through persam.io's reader and its pixel limit), zips of photos, masks.

Every error is a ``ValueError`` naming the upload (its file name, not the
server's temporary path) and what to do instead.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from persam.errors import InputError, PersamError

#: Most photos taken out of one uploaded zip, and their total uncompressed size (as declared).
MAX_ZIP_PHOTOS = 2000
MAX_ZIP_BYTES = 2 * 1024**3
#: Most entries of any kind in one uploaded zip (its listing is read before any check).
MAX_ZIP_ENTRIES = 10 * MAX_ZIP_PHOTOS


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


def _zip_members(path: Path, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The photo members of an uploaded zip, every one checked before anything is written.

    Refused with a message (the zip as a whole): more than ``MAX_ZIP_ENTRIES``
    entries, more than ``MAX_ZIP_PHOTOS`` photos or ``MAX_ZIP_BYTES`` declared
    uncompressed (zipfile stops a member at its declared size, so a header that
    lies fails its CRC instead), names climbing out of the zip (``..``,
    absolute, a drive or backslashes) and symbolic links.
    """
    from persam.io import IMAGE_EXTENSIONS

    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise InputError(f"{path.name}: more than {MAX_ZIP_ENTRIES} entries inside; zip the photos alone, or split it")
    members = []
    for member in entries:
        inner = PurePosixPath(member.filename)
        drive = len(inner.parts[0]) == 2 and inner.parts[0][1] == ":" if inner.parts else False
        if inner.is_absolute() or ".." in inner.parts or "\\" in member.filename or drive:
            raise InputError(f"{path.name}: member {member.filename!r} points outside the zip; re-create the zip")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise InputError(f"{path.name}: member {member.filename!r} is a symbolic link; zip the photos themselves")
        if not member.is_dir() and inner.suffix.lower() in IMAGE_EXTENSIONS and not inner.name.startswith("."):
            members.append(member)
    if not members:
        raise InputError(f"{path.name}: no photo (.jpg, .png, ...) inside; zip the photos themselves")
    if len(members) > MAX_ZIP_PHOTOS or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
        raise InputError(
            f"{path.name}: more than {MAX_ZIP_PHOTOS} photos or {MAX_ZIP_BYTES >> 30} GiB inside; split it"
        )
    return members


def _unpack(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> Path:
    """Write one checked member under ``target`` (streamed; a member that fails leaves no file)."""
    dest = target.joinpath(*PurePosixPath(member.filename).parts)
    if not dest.resolve().is_relative_to(target.resolve()):  # a folder of the upload that is a link
        raise InputError(f"{path.name}: member {member.filename!r} points outside the zip; re-create the zip")
    if dest.exists():
        raise InputError(f"{path.name}: {member.filename!r} is twice in the zip (or also a folder); re-create the zip")
    created = False
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as src, open(dest, "xb") as dst:
            created = True
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
        if created:
            dest.unlink()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc  # no server path
        raise InputError(
            f"{path.name}: member {member.filename!r} does not unpack ({reason}); re-create the zip"
        ) from None
    return dest


def expand_uploads(paths: list[str | os.PathLike], workdir: Path) -> list[tuple[Path, str]]:
    """(photo path, output stem) for uploaded photos and the photos inside uploaded zips.

    Zip members keep their folder in the stem (``a/b.jpg`` -> ``a/b``); stems that collide are made
    unique by the batch with the one naming rule (``persam.io.naming``). A zip is
    checked whole before anything is unpacked (``_zip_members``: escapes, links,
    bombs are refused) and unpacked under ``workdir`` only. Other files are
    kept: reading them later reports the ones that are not photos.

    Raises:
        persam.errors.InputError: a zip that does not open, holds no photo, is too large, or holds a name
            outside itself or a link.
    """
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
            members = _zip_members(path, archive)
            target = workdir / f"unzipped-{len(out)}"
            for member in members:
                dest = _unpack(path, archive, member, target)
                out.append((dest, PurePosixPath(member.filename).with_suffix("").as_posix()))
    return out
