"""The SHA-256 of large files that rarely change (checkpoints, cached runtime conversions), remembered.

Every cold start hashed the checkpoint (its identity) and the files of its cached conversion (their
check), work that grows with their size: MobileSAM's 40 MB and 23 MB, ViT-H's 2.5 GB. A file's digest is
kept in a folder of small JSON records, one per file (named by the SHA-256 of its resolved path), with
the file's identity when it was hashed: device, inode, size, and modification and change times in
nanoseconds. A later lookup whose ``os.stat`` gives the same identity answers without reading the
file; any difference hashes it again (``persam.io.hashing.file_sha256``).

Two rules keep a remembered digest true:

* as git does for its index ("racy" entries), a file changed less than ``SETTLE_S`` seconds before it
  was hashed is not remembered: a rewrite within the file system's timestamp granularity could leave
  its size and times as they were;
* the identity is taken before and after hashing and must not have changed meanwhile.

Setting a file's times back (``os.utime``) moves its change time to the present, so a rewrite that keeps
the identity would need the clock itself set back. A record that cannot be read, or written, is
ignored: the file is hashed, as without this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from persam.io.hashing import file_sha256

#: A file changed this recently (seconds) when it is hashed is not remembered (see the module docstring).
SETTLE_S = 5.0


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _record(memo: Path, resolved: str) -> Path:
    name = hashlib.sha256(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return memo / f"{name}.json"


def _recalled(record: Path, resolved: str, identity: list[int]) -> str | None:
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("path") != resolved or found.get("identity") != identity:
        return None
    digest = found.get("sha256")
    if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return digest
    return None


def remembered_sha256(path: str | os.PathLike, memo: str | os.PathLike) -> str:
    """``file_sha256(path)``, answered from the records in the folder ``memo`` when the file is unchanged.

    Args:
        path: the file.
        memo: the folder of records (created when one is first written).

    Returns:
        The SHA-256 hex digest of the file's bytes.

    Raises:
        As ``persam.io.hashing.file_sha256``: the file is missing or cannot be read.
    """
    from persam.io.atomic import atomic_write_json

    try:
        before = os.stat(path)
        resolved = os.path.realpath(path)
    except (OSError, ValueError):
        return file_sha256(path)  # which reports what is wrong with the path
    identity = _identity(before)
    record = _record(Path(memo), resolved)
    digest = _recalled(record, resolved, identity)
    if digest is not None:
        return digest
    digest = file_sha256(path)
    try:
        unchanged = _identity(os.stat(path)) == identity
    except OSError:
        return digest
    settled = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) > SETTLE_S * 1e9
    if unchanged and settled:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(record, {"path": resolved, "identity": identity, "sha256": digest})
        except (OSError, ValueError):
            pass  # a read-only or full cache: the next run hashes the file again
    return digest
