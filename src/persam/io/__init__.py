"""Files: photos, masks and label maps, video frames, atomic writes, hashing.

The lowest layer: numpy, PIL and the standard library; nothing of persam above it.
The names below are imported on first use, so that a module needing only the
atomic writer (``persam.backends.checkpoints``, ``persam models``) does not load
numpy and Pillow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from persam.io.atomic import (
        OutputPathError,
        PendingFile,
        atomic_open,
        atomic_path,
        atomic_save,
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_text,
        remove_stale_temps,
    )
    from persam.io.hashing import bytes_sha256, file_sha256
    from persam.io.images import (
        IMAGE_EXTENSIONS,
        ImageLike,
        decode_image,
        find_images,
        load_image,
        max_pixels,
        open_image,
        overlay,
        save_overlay,
        set_max_pixels,
    )
    from persam.io.masks import (
        as_label_map,
        davis_palette,
        first_frame_labels,
        read_binary_mask,
        read_label_map,
        save_label_map,
        save_mask,
    )

_MODULES = {
    "persam.io.atomic": (
        "OutputPathError",
        "PendingFile",
        "atomic_open",
        "atomic_path",
        "atomic_save",
        "atomic_write_bytes",
        "atomic_write_json",
        "atomic_write_text",
        "remove_stale_temps",
    ),
    "persam.io.hashing": ("bytes_sha256", "file_sha256"),
    "persam.io.images": (
        "IMAGE_EXTENSIONS",
        "ImageLike",
        "decode_image",
        "find_images",
        "load_image",
        "max_pixels",
        "open_image",
        "overlay",
        "save_overlay",
        "set_max_pixels",
    ),
    "persam.io.masks": (
        "as_label_map",
        "davis_palette",
        "first_frame_labels",
        "read_binary_mask",
        "read_label_map",
        "save_label_map",
        "save_mask",
    ),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'persam.io' has no attribute {name!r}")
