"""One run per output folder: an advisory lock on ``FOLDER/.persam.lock``.

The lock is the operating system's (``fcntl.flock`` on an open file): it is released when the process
ends, however it ends (Ctrl-C, an error, ``kill -9``), so a killed run never leaves a folder locked; the
file itself stays, harmless. A second run into a folder that a running one holds is refused at once with
``persam.errors.BusyError`` naming the folder (and the holder's process id, written into the file).
Where the filesystem has no ``flock`` (some network mounts), the run goes on unlocked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from persam.errors import BusyError

LOCK_NAME = ".persam.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, field: str | None = "output") -> Iterator[Path]:
    """Hold ``folder``'s run lock meanwhile (the folder is made if missing).

    Raises:
        BusyError: another process holds it.
    """
    import fcntl

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            raise BusyError(
                f"{root}: another persam run (process {holder}) is writing this folder; wait for it to end "
                "or write elsewhere",
                path=root,
                field=field,
            ) from None
        except OSError:  # no flock on this filesystem: unlocked
            yield path
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
