"""One photo, as a batch asks for it: every batch path (local threads, Ray actors, the web app) calls
``segment_photo``, so the same options give the same masks everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from persam.backends import EncodedImage
    from persam.io import ImageLike
    from persam.session.photo import Concept


def segment_photo(
    concept: Concept, image: ImageLike | EncodedImage, max_instances: int = 1, detect_absent: bool = False
) -> tuple[np.ndarray, list]:
    """(what is written, the per-instance results) of one photo or stored embedding.

    Returns:
        With ``max_instances == 1``: the (H, W) bool mask and ``[SegmentationResult]``; above 1: the
        (H, W) uint8 label map (0 background, 1..N instances) and the instances' results.
    """
    if max_instances > 1:
        found = concept.segment_instances(image, max_instances=max_instances, detect_absent=detect_absent)
        return found.labels, found.instances
    result = concept.segment(image, detect_absent=detect_absent)
    return result.mask, [result]
