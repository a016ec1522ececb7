"""Files: photos, masks and label maps, video frames, atomic writes, hashing.

The lowest layer: numpy, PIL and the standard library; nothing of persam above it.
"""

from persam.io.atomic import (
    OutputPathError, PendingFile, atomic_open, atomic_path, atomic_save, atomic_write_bytes, atomic_write_json,
    atomic_write_text,
)
from persam.io.hashing import file_sha256
from persam.io.images import (
    IMAGE_EXTENSIONS, ImageLike, find_images, load_image, max_pixels, open_image, overlay, save_overlay, set_max_pixels,
)
from persam.io.masks import (
    as_label_map, davis_palette, first_frame_labels, read_binary_mask, read_label_map, save_label_map, save_mask,
)

__all__ = [
    "IMAGE_EXTENSIONS", "ImageLike", "OutputPathError", "PendingFile", "as_label_map", "atomic_open", "atomic_path",
    "atomic_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "davis_palette", "file_sha256",
    "find_images", "first_frame_labels", "load_image", "max_pixels", "open_image", "overlay", "read_binary_mask",
    "read_label_map", "save_label_map", "save_mask", "save_overlay", "set_max_pixels",
]
