"""Atomic file writes: a temp file in the target's folder, renamed into place.

A reader never sees a half-written file, and an error leaves no temp file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_save(path: Path, save: Callable[[str], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    """Write ``path`` through ``save(tmp)`` on a temp file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise



def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file in the same folder, then rename)."""
    atomic_save(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
