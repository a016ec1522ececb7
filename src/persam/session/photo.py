"""The session API: photos and masks in (numpy / PIL / paths), typed results out.

Example::

    model = persam.load("vit_t")
    concept = model.personalize("ref.jpg", "ref_mask.png", finetune=True)
    result = concept.segment("new.jpg")
    result.mask          # (H, W) bool, photo pixels
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from persam.backends import Backend, EncodedImage, create_backend
from persam.backends.dinov2 import DEFAULT_DINO, DinoChoice, FeatureBackbone
from persam.errors import IncompatibleError, InputError, OptionsError, PersamError
from persam.io import ImageLike, load_image, read_binary_mask
from persam.method.decoder import PromptRecord
from persam.method.fit import merge_problems, optimise
from persam.method.matcher import MatcherReference, MatcherSettings
from persam.method.parts import DEFAULT_PARTS, PartPrior, build_part_prior, part_cells
from persam.method.persam_f import check_settings, fit_problems, point_prompt
from persam.method.presence import PresenceStats, object_present, pool_stats, reference_similarities
from persam.method.refine import MethodOutput
from persam.method.settings import FitSettings, PersamSettings
from persam.method.target import TargetFeatures, cell_features, masked_features, similarity
from persam.session.batched import run_method
from persam.session.matcher_prior import learn_matcher
from persam.session.options import check_instances, check_matcher, check_prior
from persam.session.reference_masks import check_reference_mask, describe
from persam.session.results import InstancesResult, SegmentationResult, absent_result, method_result


class PersamModel:
    """A frozen SAM backend plus a small cache of encoded photos.

    The encoder runs once per photo: encoding the same pixels again (for
    example segmenting the reference photo itself) reuses the embedding.
    """

    def __init__(
        self, backend: Backend, cache_size: int = 4, dino: Callable[[], FeatureBackbone] | None = None
    ) -> None:
        self.backend = backend
        self._dino_factory = dino or DinoChoice(DEFAULT_DINO, None, backend.device, False, None)
        self._dino: FeatureBackbone | None = None
        self._cache: OrderedDict[tuple[bytes, tuple[int, ...]], EncodedImage] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()  # photos may be segmented from several threads

    def feature_backbone(self) -> FeatureBackbone:
        """The DINOv2 of the matcher prior, built (and its weights fetched) on first use."""
        with self._cache_lock:
            if self._dino is None:
                self._dino = self._dino_factory()
            return self._dino

    def dino_identity(self) -> tuple[str, str] | None:
        """(name, weights SHA-256) of the matcher prior's DINOv2: the built one's, else its factory's from the
        weights file alone (``DinoChoice.identity``, no model built); None when only building it tells."""
        built, identity = self._dino, getattr(self._dino_factory, "identity", None)
        if built is not None:
            return (built.name, built.checkpoint_sha256)
        return identity() if identity is not None else None

    def encode(self, image: ImageLike | EncodedImage) -> EncodedImage:
        """Run the image encoder on a photo (or return a cached embedding)."""
        if isinstance(image, EncodedImage):
            return image
        pixels = load_image(image)
        key = (hashlib.sha256(memoryview(np.ascontiguousarray(pixels)).cast("B")).digest(), pixels.shape)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        encoded = self.backend.encode(pixels)
        with self._cache_lock:
            self._cache[key] = encoded
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return encoded

    def mask_from_prompts(
        self,
        image: ImageLike | EncodedImage,
        points_xy: Sequence[Sequence[float]] | np.ndarray | None = None,
        point_labels: Sequence[int] | np.ndarray | None = None,
        box_xyxy: Sequence[float] | np.ndarray | None = None,
    ) -> SegmentationResult:
        """SAM's own mask for clicks and/or a box, from the photo's (cached) embedding.

        A box (with or without points) gives SAM's single-mask output; points
        alone the multi-mask output's best predicted IoU. See ``persam.session.prompts``.

        Args:
            image: the photo, or its encoded image.
            points_xy: (N, 2) (x, y) photo pixels, x right, y down.
            point_labels: (N,) 1 = object, 0 = background (default: all 1).
            box_xyxy: (4,) XYXY photo pixels.

        Returns:
            The mask with its prompts (points rounded to whole pixels).

        Raises:
            ValueError: no prompt, or a point / box outside the photo.
        """
        from persam.session.prompts import Prompts, mask_from_prompts

        encoded = self.encode(image)
        prompts = Prompts.checked(encoded.geometry.original_hw, points_xy, point_labels, box_xyxy)
        out = mask_from_prompts(self.backend, encoded, prompts)
        return SegmentationResult(
            mask=out.mask,
            score=out.score,
            low_res_logits=out.low_res_logits,
            prompts=(PromptRecord.of(prompts.to_decoder()),),
        )

    def personalize(
        self,
        image: ImageLike | Sequence[ImageLike],
        mask: ImageLike | Sequence[ImageLike] | None = None,
        *,
        box: Sequence[float] | np.ndarray | None = None,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        point_labels: Sequence[int] | np.ndarray | None = None,
        finetune: bool = False,
        label: int | None = None,
        settings: PersamSettings | None = None,
        fit: FitSettings | None = None,
        prior: Literal["similarity", "part-aware", "matcher"] = "similarity",
        parts: tuple[int, int] | None = None,
        matcher: MatcherSettings | None = None,
        names: Sequence[str] | None = None,
    ) -> Concept:
        """Learn a concept from one (or several) reference photos and masks.

        Args:
            image: the reference photo, or a list of them.
            mask: its mask (nonzero = object), or a list matching ``image``;
                or None with prompts below.
            box: instead of a mask, a (4,) XYXY box on the (single) reference
                photo; SAM makes the mask (``mask_from_prompts``, same encoding).
            points: instead of a mask (or with ``box``), (N, 2) (x, y) clicks.
            point_labels: (N,) 1 = object, 0 = background (default: all 1).
            finetune: PerSAM-F: fit the two mask-scale weights on the reference(s).
            label: use only pixels of this value in multi-label masks.
            settings: PerSAM components (defaults = reference behaviour).
            fit: PerSAM-F fit settings (defaults = reference behaviour).
            prior: ``"similarity"`` (PerSAM's one point), ``"part-aware"`` (P2SAM: parts
                clustered once here, ``persam.method.parts``) or ``"matcher"`` (Matcher's
                DINOv2 matching, ``persam.session.matcher_prior``).
            parts: (min, max) part counts tried by the part-aware prior (None: 1..5, the published
                setting); refused with another prior.
            matcher: the matcher prior's settings (default: the authors' one-shot FSS-1000 setting).
            names: what messages call each reference (default: its mask's path, or "the given array").

        Raises:
            ValueError: empty or full mask, mask size differing from the photo,
                a mask covering no feature cell.
        """
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        if (box is not None or points is not None) == (mask is not None):
            raise OptionsError("pass either a reference mask or prompts (box=..., points=...), exactly one of them")
        if mask is None:
            if len(images) != 1:
                raise OptionsError(
                    f"prompts describe one reference photo, got {len(images)}; pass one mask per photo instead"
                )
            masks = [self.mask_from_prompts(images[0], points, point_labels, box).mask]
            if not masks[0].any():
                raise InputError(
                    "SAM's mask for these prompts is empty; click inside the object or draw a box around it"
                )
        if len(images) != len(masks) or not images:
            raise OptionsError(f"got {len(images)} reference photos and {len(masks)} masks; pass one mask per photo")
        settings = settings or PersamSettings()
        fit = fit or FitSettings()
        parts = check_prior(prior, parts, finetune)
        check_matcher(prior, matcher is not None, settings != PersamSettings())
        part_aware = prior == "part-aware"
        if part_aware and settings.cell_threshold != PersamSettings().cell_threshold:
            raise OptionsError(
                "the part-aware prior uses its own reference-cell rule; leave the cell threshold at its default"
            )
        if finetune:
            check_settings(settings)
        features, refs, pixels = [], [], []
        # a mask SAM made from prompts is named after its photo (the user never saw the array)
        if names is None:
            names = [f"{describe(images[0])} (SAM's mask for the prompts)"] if mask is None else map(describe, masks)
        names = list(names)
        if len(names) != len(images):
            raise OptionsError(f"got {len(images)} reference photos and {len(names)} names for them")
        for img, msk, name in zip(images, masks, names):
            photo = img if isinstance(img, EncodedImage) else load_image(img)
            if prior == "matcher":
                if isinstance(photo, EncodedImage):
                    raise IncompatibleError(
                        "the matcher prior needs the reference photo's pixels (DINOv2 sees them), not an encoded image"
                    )
                pixels.append(photo)
            encoded = self.encode(photo)
            ref_mask = check_reference_mask(read_binary_mask(msk, label), encoded.geometry.original_hw, name)
            try:
                if part_aware:
                    features.append(cell_features(encoded, part_cells(ref_mask, encoded.geometry)))
                    if not len(features[-1]):
                        raise InputError(
                            "the reference mask covers no cell centre of the feature grid; draw a larger mask"
                        )
                else:
                    features.append(masked_features(encoded, ref_mask, settings.cell_threshold))
            except PersamError as exc:
                raise exc.reworded(f"{name}: {exc}") from None
            refs.append((encoded, ref_mask))
        target = TargetFeatures.from_cells(features)
        weights = None
        if finetune:
            problems = [fit_problems(self.backend, e, [point_prompt(e, target)], [m], fit.block)[0] for e, m in refs]
            weights = optimise(merge_problems(problems), fit)
        direction = target.direction("maxmean" if finetune else "mean")
        presence = pool_stats([reference_similarities(e, m, direction, settings.cell_threshold) for e, m in refs])
        part_prior = build_part_prior(features, parts or DEFAULT_PARTS) if part_aware else None
        found = None
        if prior == "matcher":
            found = learn_matcher(self, pixels, [m for _, m in refs], matcher or MatcherSettings())
        return Concept(self, target, weights, settings, presence, parts=part_prior, matcher=found)


@dataclass
class Concept:
    """A personalized concept: everything needed to find it in new photos.

    Attributes:
        model: the model it was learned with.
        target: pooled reference features.
        weights: (3,) PerSAM-F mask-scale weights, or None for training-free PerSAM.
        settings: PerSAM components in use.
        presence: the references' similarity statistics (see ``persam.method.presence``).
        presence_threshold: user override of the calibrated threshold, or None.
        parts: the part-aware prior's clustered references, or None (PerSAM's similarity prior).
        matcher: the matcher prior's DINOv2 references, or None.
    """

    model: PersamModel
    target: TargetFeatures
    weights: torch.Tensor | None = None
    settings: PersamSettings = field(default_factory=PersamSettings)
    presence: PresenceStats | None = None
    presence_threshold: float | None = None
    parts: PartPrior | None = None
    matcher: MatcherReference | None = None

    @property
    def prior(self) -> Literal["similarity", "part-aware", "matcher"]:
        return "matcher" if self.matcher is not None else "similarity" if self.parts is None else "part-aware"

    @property
    def method(self) -> Literal["persam", "persam-f"]:
        return "persam" if self.weights is None else "persam-f"

    @property
    def threshold(self) -> float:
        """The presence threshold in use (override, else calibrated, else -1: always present)."""
        if self.presence_threshold is not None:
            return self.presence_threshold
        return self.presence.threshold if self.presence is not None else -1.0

    def similarity_map(self, encoded: EncodedImage) -> torch.Tensor:
        """(h, w) cosine similarity of the photo's cells to the concept's target direction."""
        return similarity(encoded, self.target.direction("mean" if self.weights is None else "maxmean"))

    def segment(self, image: ImageLike | EncodedImage, *, detect_absent: bool = False) -> SegmentationResult:
        """Find the concept in a photo (``segment_photos`` of one photo).

        Args:
            image: a photo (path, PIL, array) or an already encoded image.
            detect_absent: return an empty mask with ``present=False`` when the
                best similarity is below ``threshold``, or (SAM 2 models) when the
                decoder's object score of the final mask is <= 0: both must say
                "present" (``persam.method.presence``). Off by default: the
                reference method always returns a mask.
        """
        return self.segment_photos([image], detect_absent=detect_absent)[0]

    def segment_photos(
        self, images: Sequence[ImageLike | EncodedImage], *, detect_absent: bool = False
    ) -> list[SegmentationResult]:
        """Find the concept in several photos, each PerSAM stage one decoder call over all of them
        (``persam.session.batched``); one result per photo, equal to ``segment`` on each up to float
        rounding (IoU >= 0.999, scores within 1e-4)."""
        from persam.session.batched import segment_photos

        return segment_photos(self, images, detect_absent)

    def segment_instances(
        self,
        image: ImageLike | EncodedImage,
        *,
        max_instances: int = 5,
        overlap: float = 0.5,
        detect_absent: bool = False,
    ) -> InstancesResult:
        """Find every instance of the concept, encoding the photo once.

        After each instance, the similarity of the grid cells its mask covers
        is suppressed and the next location prior is taken from what is left.
        The search stops after ``max_instances``, when the best remaining
        similarity is below ``threshold`` or (SAM 2) the new mask's object
        score is <= 0 (for the first instance only with ``detect_absent``), or
        when a new mask overlaps the instances found (intersection over its
        own area above ``overlap``).
        """
        max_instances = check_instances(max_instances, self.prior)
        encoded = self.model.encode(image)
        sim = self.similarity_map(encoded).clone()
        first_best = float(sim.max())
        floor = float(sim.min()) - 1.0
        h, w = encoded.geometry.original_hw
        labels = np.zeros((h, w), dtype=np.uint8)
        found: list[SegmentationResult] = []
        rejected: MethodOutput | None = None
        while len(found) < min(max_instances, 255):
            best = float(sim.max())
            if (found or detect_absent) and best < self.threshold:
                break
            out = run_method(self, [encoded], [sim])[0]
            if (found or detect_absent) and not object_present(out.object_score):
                rejected = out
                break
            result = method_result(out, encoded)
            area = int(result.mask.sum())
            if area == 0 or (found and (labels[result.mask] > 0).sum() > overlap * area):
                break
            found.append(result)
            labels[result.mask & (labels == 0)] = len(found)
            covered = torch.from_numpy(result.low_res_logits > 0)[None, None].float()
            cells = F.max_pool2d(covered, 4)[0, 0] > 0  # low-res (4h, 4w) -> grid (h, w)
            sim[cells.to(sim.device)] = floor
        if not found and detect_absent:
            absent = absent_result(encoded, first_best, self.threshold, rejected=rejected)
            return InstancesResult(labels=labels, instances=[absent])
        return InstancesResult(labels=labels, instances=found)


def load(
    model: str = "vit_t",
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
    random_weights: bool = False,
    progress: bool | None = None,
    runtime: str = "torch",
    dino: str = DEFAULT_DINO,
    dino_checkpoint: str | os.PathLike | None = None,
    image_encoder: bool = True,
) -> PersamModel:
    """Load a backend (downloading its checkpoint once) and return a session.

    Args:
        model: "vit_t" (MobileSAM), "vit_b", "vit_l", "vit_h", "litemedsam".
        checkpoint: a local weights file instead of the download.
        device: "cpu", "cuda", "mps", or None for the best available.
        precision: "fp32" (exact) or "bf16" (the image encoder in bf16, about 2x
            faster on CPUs with AMX/AVX512-BF16; the decoder stays fp32).
        random_weights: no weights at all (speed tests).
        progress: download progress bar; None = on a terminal only.
        runtime: "torch", or "openvino" / "onnxruntime": the image encoder through
            that inference runtime on the CPU (``persam.backends.runtime``).
        dino: the matcher prior's DINOv2 (``persam.backends.dinov2.DINO_MODELS``), built on first use
            (with ``random_weights``, random too); dino_checkpoint: its local weights file instead of the download.
        image_encoder: False when no photo will be encoded (``create_backend``): the SAM 1 family's image
            encoder is then not built.
    """
    options = {"precision": precision, "random_weights": random_weights, "progress": progress, "runtime": runtime}
    options["image_encoder"] = image_encoder
    backend = create_backend(model, checkpoint, device=device, **options)
    return PersamModel(backend, dino=DinoChoice(dino, dino_checkpoint, backend.device, random_weights, progress))
