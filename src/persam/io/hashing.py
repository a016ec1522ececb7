"""File hashing: the SHA-256 of a file's bytes, read in chunks.

Used for checkpoint verification and for the album index's change detection.
"""

from __future__ import annotations

import hashlib
import os

_CHUNK = 1 << 20  # 1 MiB


def file_sha256(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest (64 lowercase hex characters) of a file's bytes.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """The SHA-256 hex digest of ``data``: equal to :func:`file_sha256` of a file holding these bytes."""
    return hashlib.sha256(data).hexdigest()
