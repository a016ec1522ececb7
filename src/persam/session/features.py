"""DINOv2 features in an album index: stored once by ``persam index``, so the matcher prior runs no encoder there.

An index built with the DINOv2 features keeps, next to SAM's arrays of every photo, the array ``"dinov2"``:
(1, 37 * 37, C) pre-norm patch features (``persam.backends.dinov2.FeatureBackbone.encode``, row-major patch
order), in the index's dtype (float32: masks identical to a direct run). Its metadata (the SQLite ``meta``
table, the Parquet ``store.json``) records which DINOv2 made them: ``dinov2`` (the backbone's name) and
``dinov2_sha256`` (its weights' SHA-256, or "random"). A matcher concept learned with another DINOv2, or an
index without the features, is refused before any photo is segmented (``require_dino``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from persam.errors import IncompatibleError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from persam.backends.dinov2 import FeatureBackbone
    from persam.method.matcher import MatcherReference

#: The array's name in a stored photo (``persam.backends.base.FEATURE_ARRAYS``) and the metadata keys.
DINO_ARRAY = "dinov2"
NAME_KEY, SHA_KEY = "dinov2", "dinov2_sha256"


def recorded_dino(album) -> tuple[str, str] | None:
    """(name, SHA-256) of the DINOv2 whose features ``album`` holds, or None for an index without them."""
    name, sha = album.meta_value(NAME_KEY), album.meta_value(SHA_KEY)
    return None if name is None or sha is None else (name, sha)


def check_dino(album, dino: FeatureBackbone) -> bool:
    """Whether ``album`` records no DINOv2 yet (``record_dino`` once its photos hold ``dino``'s features).

    Raises:
        IncompatibleError: the index holds the features of another DINOv2 or other weights.
    """
    found = recorded_dino(album)
    if found is not None and found != (dino.name, dino.checkpoint_sha256):
        raise IncompatibleError(
            f"{album_name(album)}: the index holds the features of DINOv2 {found[0]!r} (SHA-256 {found[1][:12]}), "
            f"the model has {dino.name!r} (SHA-256 {dino.checkpoint_sha256[:12]}); use that DINOv2 or a new index",
            path=album_name(album),
            field="dino",
        )
    return found is None


def record_dino(album, dino: FeatureBackbone) -> None:
    """Record ``dino`` as the DINOv2 of the index's features (every photo of it holds them)."""
    album.record_meta({NAME_KEY: dino.name, SHA_KEY: dino.checkpoint_sha256})


def require_dino(album, reference: MatcherReference) -> None:
    """Refuse, in one line, a matcher concept on an index without its DINOv2's features.

    Raises:
        IncompatibleError: the index holds no DINOv2 features, or those of another DINOv2 than the concept's.
    """
    found = recorded_dino(album)
    where = album_name(album)
    if found is None:
        raise IncompatibleError(
            f"{where}: the index holds SAM's embeddings only, the matcher prior needs the photos' DINOv2 "
            "features; index the photos again with the DINOv2 features",
            path=where,
            field="prior",
        )
    if found != (reference.backbone, reference.backbone_sha256):
        raise IncompatibleError(
            f"{where}: the index holds the features of DINOv2 {found[0]!r} (SHA-256 {found[1][:12]}), the concept "
            f"was learned with {reference.backbone!r} (SHA-256 {reference.backbone_sha256[:12]}); "
            "use an index made with the concept's DINOv2",
            path=where,
            field="dino",
        )


def dino_array(dino: FeatureBackbone, pixels: np.ndarray) -> torch.Tensor:
    """(1, 37 * 37, C) float32 DINOv2 patch features of an (H, W, 3) uint8 photo, as an index stores them."""
    return dino.encode(pixels)[None]


def album_name(album) -> str:
    """The index as the user named it (a SQLite file's path, a store's folder or URI)."""
    return str(getattr(album, "uri", None) or album.path)
