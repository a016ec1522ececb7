"""Photos, as a batch asks for them: every batch path (local threads, Ray actors, the web app) calls
``segment_photos`` (or ``segment_photo``, its batch of one), so the same options give the same masks
everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from persam.backends import EncodedImage
    from persam.io import ImageLike
    from persam.session.photo import Concept


def segment_photos(
    concept: Concept, images: Sequence[ImageLike | EncodedImage], max_instances: int = 1, detect_absent: bool = False
) -> list[tuple[np.ndarray, list]]:
    """(what is written, the per-instance results) of each photo or stored embedding, in order.

    With ``max_instances == 1`` the photos are decoded together (``Concept.segment_photos``: each PerSAM
    stage one decoder call over all of them): each gives its (H, W) bool mask and ``[SegmentationResult]``.
    Above 1, photo by photo (each instance's search depends on the one before): the (H, W) uint8 label
    map (0 background, 1..N instances) and the instances' results.
    """
    if max_instances > 1:
        found = [
            concept.segment_instances(image, max_instances=max_instances, detect_absent=detect_absent)
            for image in images
        ]
        return [(f.labels, f.instances) for f in found]
    return [(r.mask, [r]) for r in concept.segment_photos(images, detect_absent=detect_absent)]


def segment_photo(
    concept: Concept, image: ImageLike | EncodedImage, max_instances: int = 1, detect_absent: bool = False
) -> tuple[np.ndarray, list]:
    """``segment_photos`` of one photo or stored embedding."""
    return segment_photos(concept, [image], max_instances, detect_absent)[0]
