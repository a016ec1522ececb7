"""File hashing: the SHA-256 of a file's bytes, read in chunks.

Used for checkpoint verification and for the album index's change detection.

The chunks are large (up to 16 MiB, never more than the file): reading into a buffer and hashing it
both let other threads run, and each chunk takes Python's lock back twice; while another thread holds
that lock (the warm start hashes the checkpoint while PyTorch is imported) every retake waits up to
the interpreter's switch interval (5 ms), so small chunks made that hash many times slower than alone.
"""

from __future__ import annotations

import hashlib
import os

from persam.errors import InputError, MissingInputError

_CHUNK = 1 << 24  # 16 MiB at most; smaller files get a buffer of their own size


def file_sha256(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest (64 lowercase hex characters) of a file's bytes.

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: it cannot be read (a folder, no permission).
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            buffer = memoryview(bytearray(max(1, min(size, _CHUNK))))
            while count := handle.readinto(buffer):
                digest.update(buffer[:count])
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such file; check the path", path=path) from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); check the path and its permissions",
            path=path,
        ) from None
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """The SHA-256 hex digest of ``data``: equal to :func:`file_sha256` of a file holding these bytes."""
    return hashlib.sha256(data).hexdigest()
