"""The Matcher prior in the session API: DINOv2 references learned once, photos segmented by Matcher's steps.

``PersamModel.personalize(..., prior="matcher")`` calls ``learn_matcher``: each
reference photo goes through DINOv2 once (its unit patch features and the
mask's cells are the concept's ``MatcherReference``) and through SAM's encoder
(the concept also keeps PerSAM's pooled target, so the file and the front
ends treat it like any concept). ``segment_matcher_photo`` runs DINOv2 and
SAM's encoder on the photo (SAM's embedding is cached as for PerSAM) and
``persam.method.matcher_select.segment_matcher``.

An already encoded photo (``EncodedImage``, e.g. read back from an album index)
is segmented without any encoder when it carries its DINOv2 patch features
(``EncodedImage.features["dinov2"]``, stored by ``persam index`` with the
features: ``persam.session.features``); without them it is refused. Which
DINOv2 made the stored features is checked per index (``features.require_dino``),
not per photo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from persam.backends.base import EncodedImage
from persam.errors import IncompatibleError
from persam.io import ImageLike, load_image
from persam.method.matcher import MatcherReference, MatcherSettings, pool_reference
from persam.method.matcher_select import MatcherOutput, segment_matcher
from persam.session.options import check_absence
from persam.session.results import SegmentationResult

if TYPE_CHECKING:
    from persam.session.photo import Concept, PersamModel


def unit_features(model: PersamModel, pixels: np.ndarray) -> torch.Tensor:
    """(37 * 37, C) L2-normalised DINOv2 patch features of an (H, W, 3) uint8 photo."""
    return F.normalize(model.feature_backbone().encode(pixels), dim=1, p=2)


def learn_matcher(
    model: PersamModel, pixels: list[np.ndarray], masks: list[torch.Tensor], settings: MatcherSettings
) -> MatcherReference:
    """The concept's Matcher references: every photo's unit patches and its mask's cells, concatenated.

    Args:
        model: the session (its DINOv2 is built on first use).
        pixels: (H, W, 3) uint8 reference photos.
        masks: (H, W) bool masks, one per photo (already checked: not empty, not full).
        settings: Matcher's knobs, kept with the concept.
    """
    dino = model.feature_backbone()
    features = torch.cat([unit_features(model, p) for p in pixels])
    pooled = torch.cat([pool_reference(m.cpu()) for m in masks])
    return MatcherReference(
        features=features, pooled=pooled, backbone=dino.name, backbone_sha256=dino.checkpoint_sha256, settings=settings
    )


def check_backbone(model: PersamModel, reference: MatcherReference, where: str) -> None:
    """IncompatibleError unless the model's DINOv2 is the one the concept was learned with.

    Compared by name and weights' SHA-256 (``PersamModel.dino_identity``: the weights file is hashed, no
    model is built); only when the weights are not on this machine yet is the DINOv2 built (fetched) to tell.
    """
    found = model.dino_identity()
    if found is None:
        dino = model.feature_backbone()
        found = (dino.name, dino.checkpoint_sha256)
    if found != (reference.backbone, reference.backbone_sha256):
        raise IncompatibleError(
            f"{where}: the matcher prior was learned with DINOv2 {reference.backbone!r} "
            f"(SHA-256 {reference.backbone_sha256[:12]}), the model has {found[0]!r} "
            f"(SHA-256 {found[1][:12]}); load the model with that DINOv2",
            field="dino",
        )


def matcher_result(out: MatcherOutput) -> SegmentationResult:
    """The photo's result: the merged mask, the prompt points, every merged mask's point set."""
    return SegmentationResult(
        mask=out.mask.cpu().numpy(),
        score=out.score,
        low_res_logits=out.low_res_logits.float().cpu().numpy(),
        notes=tuple(out.notes),
        prompts=tuple(out.prompts),
        matched_xy=out.points_xy.cpu().numpy().astype(np.int64),
    )


def segment_matcher_photo(concept: Concept, image: ImageLike | EncodedImage, detect_absent: bool) -> SegmentationResult:
    """The Matcher prior on one photo (see the module docstring).

    Raises:
        IncompatibleError: ``image`` is an encoded image without DINOv2 features (no pixels for DINOv2).
        OptionsError: absence detection asked for (the prior always returns its merged mask).
    """
    check_absence("matcher", detect_absent)
    if isinstance(image, EncodedImage):
        stored = image.features.get("dinov2")
        if stored is None:
            raise IncompatibleError(
                "the matcher prior needs the photo's pixels or its stored DINOv2 features; "
                "this encoded photo holds SAM's embedding only",
                field="prior",
            )
        encoded, features = image, F.normalize(stored[0].float(), dim=1, p=2)
    else:
        pixels = load_image(image)
        encoded, features = concept.model.encode(pixels), unit_features(concept.model, pixels)
    ref = concept.matcher
    out = segment_matcher(concept.model.backend, encoded, ref, features, ref.settings)
    return matcher_result(out)
