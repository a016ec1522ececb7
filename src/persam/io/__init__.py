"""Files: photos, masks and label maps, video frames, atomic writes, hashing.

The lowest layer: numpy, PIL and the standard library; nothing of persam above it.
"""

from persam.io.atomic import atomic_save, atomic_write_text
from persam.io.images import IMAGE_EXTENSIONS, ImageLike, find_images, load_image, overlay, save_overlay
from persam.io.masks import davis_palette, load_mask, save_label_map, save_mask

__all__ = [
    "IMAGE_EXTENSIONS", "ImageLike", "atomic_save", "atomic_write_text", "davis_palette", "find_images",
    "load_image", "load_mask", "overlay", "save_label_map", "save_mask", "save_overlay",
]
