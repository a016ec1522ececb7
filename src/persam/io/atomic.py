"""Atomic file writes: a temp file in the target's folder, renamed into place.

Every file persam writes goes through :class:`PendingFile` (directly, or
through :func:`atomic_path`, :func:`atomic_open`, :func:`atomic_save`,
:func:`atomic_write_text`, :func:`atomic_write_json`), so that:

- a reader never sees a half-written file (``os.replace`` is atomic);
- the file is created with the user's umask (mode ``0o666 & ~umask``, as
  ``open()`` would), not ``mkstemp``'s private 0600, so shared results need
  no ``chmod``;
- missing parent folders are created;
- every error path, ``KeyboardInterrupt`` included, removes the temp file;
- a folder that cannot be created or written gives a one-line
  :class:`OutputPathError` naming the target (never the hidden temp name)
  and the fix;
- what a hard kill (SIGKILL, power loss) leaves behind, a hidden
  ``.NAME.<8 hex digits>.tmp`` beside the target, is removed by the next run
  of the same command (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from persam.errors import OutputError

#: The temp files :class:`PendingFile` makes: ``.<target name>.<8 lowercase hex digits>.tmp``.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def temp_name(target: Path) -> Path:
    """A fresh temp path beside ``target`` (matches :data:`TEMP_NAME`)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


class OutputPathError(OutputError, PermissionError):
    """The target's folder cannot be created or written, or the target is not a file.

    An ``OutputError`` (the user can fix it: front ends report it in one line) and a
    ``PermissionError`` for Python callers; ``str(exc)`` names the target path and the fix.
    """


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _output_error(target: Path, exc: OSError, action: str) -> OutputPathError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    elif exc.errno == errno.ENOSPC:
        fix = "free disk space or choose another folder"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where a folder is needed; choose another output path"
    elif exc.errno == errno.EISDIR:
        fix = "a folder has that name; choose another output file name"
    else:
        fix = "choose another output path"
    return OutputPathError(f"cannot {action} {target} ({_describe(exc)}); {fix}", path=target)


class PendingFile:
    """A temp file beside ``target``, moved onto it by :meth:`commit`.

    The temp file exists (empty) from construction; write it by name
    (``self.temp``), then :meth:`commit` or :meth:`discard`. Used directly by
    writers whose lifetime spans several calls (a video encoder); everything
    else uses the context managers below.

    Args:
        target: the file to produce.

    Raises:
        OutputPathError: the folder cannot be created or written.
    """

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _output_error(self.target, exc, "create the folder for") from None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        while True:
            temp = temp_name(self.target)
            try:
                # 0o666 filtered by the process umask, as open() does.
                fd = os.open(temp, flags, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _output_error(self.target, exc, "write") from None
            break
        try:
            self._mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        self.temp = temp

    def commit(self) -> Path:
        """Move the finished temp file onto the target; returns the target."""
        try:
            # A writer that replaced the temp file (safetensors does) may have made it 0600.
            if stat.S_IMODE(os.stat(self.temp).st_mode) != self._mode:
                os.chmod(self.temp, self._mode)
            os.replace(self.temp, self.target)
        except OSError as exc:
            self.discard()
            raise _output_error(self.target, exc, "write") from None
        return self.target

    def discard(self) -> None:
        """Remove the temp file (safe to call more than once)."""
        self.temp.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on a clean exit it becomes ``target``.

    Any exception in the block (``KeyboardInterrupt`` too) removes the temp
    file and propagates.
    """
    pending = PendingFile(target)
    try:
        yield pending.temp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


@contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Yield a file handle (``mode`` ``"wb"`` or ``"w"``) whose content becomes ``target`` on a clean exit.

    The data is flushed to disk before the rename; an ``OSError`` then (disk
    full) is reported as :class:`OutputPathError` naming ``target``. Errors
    raised inside the block propagate unchanged (after the temp file is removed).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode {mode!r}; pass 'wb' or 'w'")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(target) as temp:
        handle = open(temp, mode, encoding=encoding)
        try:
            yield handle
        except BaseException:
            handle.close()
            raise
        try:
            with handle:
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise _output_error(Path(target), exc, "write") from None


def atomic_save(path: str | os.PathLike, save: Callable[[str], object]) -> None:
    """Write ``path`` through ``save(temp_name)`` (e.g. ``img.save``), then rename it into place."""
    with atomic_path(path) as temp:
        save(str(temp))


def _write(handle: IO[Any], data: Any, target: str | os.PathLike) -> None:
    try:
        handle.write(data)
    except OSError as exc:
        raise _output_error(Path(target), exc, "write") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        _write(handle, data, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        _write(handle, text, path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON (no NaN/Infinity: pass None for those) plus a newline, atomically.

    Raises:
        ValueError: ``obj`` holds a non-finite float or a value JSON cannot hold
            (nothing is written then).
    """
    text = json.dumps(obj, indent=indent, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def remove_stale_temps(
    folders: Iterable[str | os.PathLike], before: float | None = None, *, keep: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """Remove the temp files an interrupted writer left in ``folders``; returns the paths removed.

    Only regular files named like :class:`PendingFile`'s (:data:`TEMP_NAME`),
    directly in each folder (not in subfolders), last modified before
    ``before`` (a ``time.time()`` value; default now), and not in ``keep``
    (the run's own pending files): call it when a run starts, before it
    writes there, with the folders it writes. A missing folder, or a file
    that cannot be removed, is passed over.
    """
    cutoff = time.time() if before is None else before
    kept = {os.path.abspath(p) for p in keep}
    removed = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not TEMP_NAME.fullmatch(entry.name) or os.path.abspath(entry.path) in kept:
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue
    return removed
