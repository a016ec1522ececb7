"""persam: personalize Segment Anything with one shot (PerSAM and PerSAM-F).

Quick start::

    import persam
    model = persam.load("vit_t")                 # downloads MobileSAM once
    concept = model.personalize("dog.jpg", "dog_mask.png")
    result = concept.segment("park.jpg")         # result.mask: (H, W) bool

Heavy modules (torch, the SAM packages) are imported on first use, not when
``persam`` itself is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Concept", "PersamModel", "SegmentationResult", "load", "segment_video", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from persam.session.photo import Concept, PersamModel, load
    from persam.session.results import SegmentationResult
    from persam.session.video import segment_video

_LAZY = {
    "Concept": "persam.session.photo",
    "PersamModel": "persam.session.photo",
    "SegmentationResult": "persam.session.results",
    "load": "persam.session.photo",
    "segment_video": "persam.session.video",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'persam' has no attribute {name!r}")
