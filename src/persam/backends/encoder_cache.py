"""Cached runtime conversions on disk, without PyTorch: folder names, manifests and their file hashes.

A conversion lives in ``cache_dir() / "encoders" / folder_name(...)`` with ``manifest.json`` holding its key
and the SHA-256 of each file; ``persam.backends.runtime`` writes and verifies them, the warm start
(``persam.backends.warm``) reads them before PyTorch is imported.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The manifest written last into a conversion's folder.
MANIFEST = "manifest.json"


def encoders_dir() -> Path:
    """The folder of the cached conversions: ``cache_dir() / "encoders"``."""
    from persam.backends.checkpoints import cache_dir

    return cache_dir() / "encoders"


def folder_name(model: str, runtime: str, precision: str, input_size: int, weights_sha256: str) -> str:
    """Cache folder name: one per model, runtime, precision (or "any"), input size and checkpoint."""
    return f"{model}-{runtime}-{precision}-{input_size}-{weights_sha256[:16]}"


def file_hashes(folder: Path) -> dict[str, str]:
    """{name: SHA-256} of the files directly in ``folder`` but the manifest (remembered while a file stays
    as it was: ``persam.backends.checkpoints.checkpoint_sha256``)."""
    from persam.backends.checkpoints import checkpoint_sha256

    return {p.name: checkpoint_sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != MANIFEST}


def read_manifest(folder: Path) -> dict | None:
    """``folder``'s manifest, or None if it is missing or unreadable."""
    try:
        found = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
