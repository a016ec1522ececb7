"""The PerSeg layout and scoring of PerSeg predictions.

PerSeg: ``ROOT/Images/<object>/NN.jpg``, ``ROOT/Annotations/<object>/NN.png`` (nonzero =
object, ``00`` = reference), predictions ``PRED_DIR/<object>/NN.png``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from persam.errors import InputError, MissingInputError
from persam.eval.common import NamedIndex, PathLike, check_same_shape, is_visible, require_dir, subdirs
from persam.eval.perseg_metrics import PerSegReport, perseg_image_counts, score_perseg_object, summarize_perseg
from persam.io.masks import read_binary_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PERSEG_LAYOUT = "ROOT/Images/<object>/NN.jpg and ROOT/Annotations/<object>/NN.png, reference NN = 00"
PERSEG_PRED_LAYOUT = "PRED_DIR/<object>/NN.png for every test image NN (nonzero = object)"


def read_perseg_mask(path: PathLike) -> NDArray[np.bool_]:
    """A PerSeg mask (ground truth or prediction) as ``(H, W)`` bool, read as PerSAM's evaluation reads it.

    ``persam.io.masks.read_binary_mask`` with ``rule="gray"``: the displayed colour's BT.601 grey > 0,
    as ``cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY) > 0``.
    """
    return read_binary_mask(path, rule="gray")


@dataclass(frozen=True)
class PerSegObject:
    """One PerSeg object: its reference pair and its test pairs (sorted by id)."""

    name: str
    ref_image: Path
    ref_mask: Path
    test_ids: tuple[str, ...]
    test_images: tuple[Path, ...]
    test_masks: tuple[Path, ...]

    @property
    def test_pairs(self) -> list[tuple[Path, Path]]:
        """``(image, mask)`` paths of the test images."""
        return list(zip(self.test_images, self.test_masks, strict=True))


class PerSegDataset(NamedIndex[PerSegObject]):
    """Index of a PerSeg folder (see the module docstring for the layout).

    Args:
        root: Dataset root holding ``Images/`` and ``Annotations/``.
        reference_id: File stem of the reference image of every object.

    Raises:
        FileNotFoundError: A folder, a reference image or an annotation is missing.
        ValueError: No objects, or an annotation without an image.
    """

    def __init__(self, root: PathLike, reference_id: str = "00") -> None:
        self.root = Path(root)
        self.reference_id = reference_id
        images_root, ann_root = self.root / "Images", self.root / "Annotations"
        require_dir(self.root, "PerSeg root", PERSEG_LAYOUT)
        require_dir(images_root, "PerSeg image folder", PERSEG_LAYOUT)
        require_dir(ann_root, "PerSeg annotation folder", PERSEG_LAYOUT)
        names = [p.name for p in subdirs(images_root)]
        if not names:
            raise InputError(f"no object folders in {images_root}; expected {PERSEG_LAYOUT}")
        self._where = str(images_root)
        self._items = tuple(self._scan(n, images_root, ann_root) for n in names)

    @property
    def objects(self) -> tuple[PerSegObject, ...]:
        """All objects, sorted by name."""
        return self._items

    def _scan(self, name: str, images_root: Path, ann_root: Path) -> PerSegObject:
        img_dir, ann_dir = images_root / name, ann_root / name
        require_dir(ann_dir, f"annotation folder of object {name!r}", PERSEG_LAYOUT)
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.is_file() and is_visible(p) and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in images:
                    raise InputError(f"two images with id {p.stem!r} in {img_dir}; expected one NN.jpg per id")
                images[p.stem] = p
        masks = {p.stem: p for p in ann_dir.glob("*.png") if is_visible(p)}
        ref = self.reference_id
        if ref not in images:
            raise MissingInputError(
                f"reference image {img_dir / (ref + '.jpg')} not found for object {name!r}; expected {PERSEG_LAYOUT}"
            )
        for stem in images:
            if stem not in masks:
                raise MissingInputError(
                    f"annotation {ann_dir / (stem + '.png')} for image {images[stem]} not "
                    f"found; expected {PERSEG_LAYOUT}"
                )
        for stem in masks:
            if stem not in images:
                raise InputError(
                    f"annotation {masks[stem]} has no image {img_dir / (stem + '.jpg')}; expected {PERSEG_LAYOUT}"
                )
        test_ids = tuple(sorted(s for s in images if s != ref))
        return PerSegObject(
            name=name,
            ref_image=images[ref],
            ref_mask=masks[ref],
            test_ids=test_ids,
            test_images=tuple(images[s] for s in test_ids),
            test_masks=tuple(masks[s] for s in test_ids),
        )


def evaluate_perseg(
    root: PathLike,
    pred_dir: PathLike,
    *,
    objects: Iterable[str] | None = None,
    reference_id: str = "00",
    dilation_ratio: float = 0.02,
) -> PerSegReport:
    """Score PerSeg predictions: per-object IoU and boundary IoU and their means (percent).

    Args:
        root: PerSeg root (``Images/`` and ``Annotations/``).
        pred_dir: Folder with ``<object>/NN.png`` predictions (nonzero = object).
        objects: Optional subset of object names; default all, sorted.
        reference_id: Stem of the reference image, excluded from scoring.
        dilation_ratio: Boundary band width for bIoU (fraction of the image diagonal).

    Returns:
        The :class:`~persam.eval.perseg_metrics.PerSegReport`.

    Raises:
        FileNotFoundError: The dataset layout is broken or a prediction file is missing.
        ValueError: Unknown object names, an object without test images, or a size mismatch.
    """
    dataset = PerSegDataset(root, reference_id=reference_id)
    pred_root = Path(pred_dir)
    require_dir(pred_root, "prediction folder", PERSEG_PRED_LAYOUT)
    wanted = None if objects is None else list(objects)
    unknown = [] if wanted is None else [n for n in wanted if n not in dataset.names]
    if unknown:
        raise InputError(
            f"unknown PerSeg objects {unknown}; objects in {dataset.root / 'Images'}: {', '.join(dataset.names)}"
        )
    selected = dataset.objects if wanted is None else tuple(dataset[n] for n in wanted)
    scores = []
    for obj in selected:
        if not obj.test_ids:
            raise InputError(f"object {obj.name!r} has no test images besides the reference {reference_id}")
        counts = []
        for stem, mask_path in zip(obj.test_ids, obj.test_masks, strict=True):
            pred_path = pred_root / obj.name / f"{stem}.png"
            if not pred_path.is_file():
                raise MissingInputError(f"prediction {pred_path} not found; expected {PERSEG_PRED_LAYOUT}")
            gt, pred = read_perseg_mask(mask_path), read_perseg_mask(pred_path)
            check_same_shape(pred, gt, pred_path, mask_path)
            counts.append(perseg_image_counts(pred, gt, dilation_ratio))
        scores.append(score_perseg_object(obj.name, counts))
    return summarize_perseg(scores)
