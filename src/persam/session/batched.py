"""A concept found in several photos at once: each PerSAM stage one decoder call over all of them.

``segment_photos`` is what ``Concept.segment`` runs (one photo being a batch of one) and what a batch
(``persam.session.dispatch.segment_photos``, the engine's ``--batch``) runs over N photos. With the
similarity prior, PerSAM's guided first pass and its two refinements, or PerSAM-F's three-scale pass
and its two refinements, are each one decoder call over the photos' prompts
(``persam.method.persam.segment_persam_photos``, ``persam.method.persam_f.segment_persam_f_photos``);
masks are upsampled per photo. The part-aware and matcher priors run photo by photo here (their
candidates are batched within each photo). Results equal photo-by-photo decoding up to float rounding
(masks IoU >= 0.999, scores within 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from persam.method.parts import segment_parts
from persam.method.persam import segment_persam_photos
from persam.method.persam_f import segment_persam_f_photos
from persam.method.presence import object_present
from persam.session.results import SegmentationResult, absent_result, method_result

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from persam.backends import EncodedImage
    from persam.io import ImageLike
    from persam.method.refine import MethodOutput
    from persam.session.photo import Concept


def run_method(
    concept: Concept, encoded: Sequence[EncodedImage], sims: Sequence[torch.Tensor | None]
) -> list[MethodOutput]:
    """PerSAM or PerSAM-F (the concept's) on the photos at once, each from its (h, w) similarity map."""
    backend = concept.model.backend
    if concept.weights is None:
        return segment_persam_photos(backend, encoded, concept.target, concept.settings, sims)
    return segment_persam_f_photos(backend, encoded, concept.target, concept.weights, concept.settings, sims)


def segment_photos(
    concept: Concept, images: Sequence[ImageLike | EncodedImage], detect_absent: bool = False
) -> list[SegmentationResult]:
    """``Concept.segment`` on each photo, the decoder batched across them (see the module docstring).

    Args:
        concept: the concept.
        images: photos (paths, PIL, arrays) or encoded images; encoded here if need be.
        detect_absent: as ``Concept.segment``.

    Returns:
        One result per photo, in order; masks (H, W) bool in each photo's pixels.
    """
    if concept.matcher is not None:
        from persam.session.matcher_prior import segment_matcher_photo

        return [segment_matcher_photo(concept, image, detect_absent) for image in images]
    encoded = [concept.model.encode(image) for image in images]
    sims = [concept.similarity_map(e) for e in encoded]
    bests = [float(s.max()) for s in sims]
    results: list[SegmentationResult | None] = [None] * len(encoded)
    todo = []
    for i, best in enumerate(bests):
        if detect_absent and best < concept.threshold:
            results[i] = absent_result(encoded[i], best, concept.threshold)
        else:
            todo.append(i)
    if concept.parts is not None:
        for i in todo:
            found = segment_parts(concept.model.backend, encoded[i], concept.parts, concept.settings)
            results[i] = _result(concept, found.output, encoded[i], bests[i], detect_absent, found)
    elif todo:
        outs = run_method(concept, [encoded[i] for i in todo], [sims[i] for i in todo])
        for i, out in zip(todo, outs):
            results[i] = _result(concept, out, encoded[i], bests[i], detect_absent)
    return [r for r in results if r is not None]


def _result(
    concept: Concept, out: MethodOutput, encoded: EncodedImage, best: float, detect_absent: bool, parts=None
) -> SegmentationResult:
    if detect_absent and not object_present(out.object_score):
        return absent_result(encoded, best, concept.threshold, rejected=out)
    extra = () if parts is None else (parts.parts, tuple(parts.candidates))
    return method_result(out, encoded, *extra)
