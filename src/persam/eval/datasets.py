"""PerSeg and DAVIS 2017 dataset layouts, mask readers and the scoring entry points.

PerSeg: ``ROOT/Images/<object>/NN.jpg``, ``ROOT/Annotations/<object>/NN.png`` (nonzero =
object, ``00`` = reference), predictions ``PRED_DIR/<object>/NN.png``.
DAVIS 2017: ``ROOT/JPEGImages/480p/<seq>/00000.jpg``, ``ROOT/Annotations/480p/<seq>/00000.png``
(palette PNG, pixel value = object id, 255 = void), ``ROOT/ImageSets/2017/val.txt`` (one
sequence per line), predictions ``PRED_DIR/<seq>/00000.png`` (palette/grayscale ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from persam.eval.metrics import (
    DavisReport,
    PerSegReport,
    perseg_image_counts,
    score_davis_sequence,
    score_perseg_object,
    summarize_davis,
    summarize_perseg,
)
from persam.io.masks import read_binary_mask, read_label_map

PathLike = str | Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PERSEG_LAYOUT = "ROOT/Images/<object>/NN.jpg and ROOT/Annotations/<object>/NN.png, reference NN = 00"
PERSEG_PRED_LAYOUT = "PRED_DIR/<object>/NN.png for every test image NN (nonzero = object)"
DAVIS_LAYOUT = ("ROOT/JPEGImages/480p/<seq>/00000.jpg, ROOT/Annotations/480p/<seq>/00000.png "
                "and ROOT/ImageSets/2017/val.txt")
DAVIS_PRED_LAYOUT = "PRED_DIR/<seq>/<frame>.png with pixel value = object id, named like the GT annotations"


_Item = TypeVar("_Item", bound="PerSegObject | DavisSequence")


class _NamedIndex(Generic[_Item]):
    """Ordered, name-addressable collection of dataset entries."""

    _items: tuple[_Item, ...]
    _where: str

    @property
    def names(self) -> list[str]:
        """Entry names in dataset order."""
        return [item.name for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_Item]:
        return iter(self._items)

    def __getitem__(self, name: str) -> _Item:
        for item in self._items:
            if item.name == name:
                return item
        raise KeyError(f"{name!r} is not in {self._where}; known: {', '.join(self.names)}")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _require_dir(path: Path, what: str, layout: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} not found; expected {layout}")


# ------------------------------------------------------------------ mask reading


def read_perseg_mask(path: PathLike) -> NDArray[np.bool_]:
    """A PerSeg mask (ground truth or prediction) as ``(H, W)`` bool, read as PerSAM's evaluation reads it.

    ``persam.io.masks.read_binary_mask`` with ``rule="gray"``: the displayed colour's BT.601 grey > 0,
    as ``cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY) > 0``.
    """
    return read_binary_mask(path, rule="gray")


def read_davis_labels(path: PathLike) -> NDArray[np.uint8]:
    """A DAVIS annotation or prediction as ``(H, W)`` uint8 object ids (palette indices / grey levels).

    ``persam.io.masks.read_label_map`` with ``colours="refuse"``: a colour image that is not all grey is
    an error, since colours cannot be mapped back to the ids the annotation used.
    """
    return read_label_map(path, colours="refuse")


def _check_shape(pred: np.ndarray, gt: np.ndarray, pred_path: Path, gt_path: Path) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but ground truth {gt_path} "
                         f"is {gt.shape[1]}x{gt.shape[0]} (WxH); predictions must match the GT size")


# ------------------------------------------------------------------ PerSeg


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


class PerSegDataset(_NamedIndex[PerSegObject]):
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
        _require_dir(self.root, "PerSeg root", PERSEG_LAYOUT)
        _require_dir(images_root, "PerSeg image folder", PERSEG_LAYOUT)
        _require_dir(ann_root, "PerSeg annotation folder", PERSEG_LAYOUT)
        names = [p.name for p in _subdirs(images_root)]
        if not names:
            raise ValueError(f"no object folders in {images_root}; expected {PERSEG_LAYOUT}")
        self._where = str(images_root)
        self._items = tuple(self._scan(n, images_root, ann_root) for n in names)

    @property
    def objects(self) -> tuple[PerSegObject, ...]:
        """All objects, sorted by name."""
        return self._items

    def _scan(self, name: str, images_root: Path, ann_root: Path) -> PerSegObject:
        img_dir, ann_dir = images_root / name, ann_root / name
        _require_dir(ann_dir, f"annotation folder of object {name!r}", PERSEG_LAYOUT)
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in images:
                    raise ValueError(f"two images with id {p.stem!r} in {img_dir}; expected one NN.jpg per id")
                images[p.stem] = p
        masks = {p.stem: p for p in ann_dir.glob("*.png") if _visible(p)}
        ref = self.reference_id
        if ref not in images:
            raise FileNotFoundError(f"reference image {img_dir / (ref + '.jpg')} not found for object {name!r}; "
                                    f"expected {PERSEG_LAYOUT}")
        for stem in images:
            if stem not in masks:
                raise FileNotFoundError(f"annotation {ann_dir / (stem + '.png')} for image {images[stem]} not "
                                        f"found; expected {PERSEG_LAYOUT}")
        for stem in masks:
            if stem not in images:
                raise ValueError(f"annotation {masks[stem]} has no image {img_dir / (stem + '.jpg')}; "
                                 f"expected {PERSEG_LAYOUT}")
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
        The :class:`~persam.eval.metrics.PerSegReport`.

    Raises:
        FileNotFoundError: The dataset layout is broken or a prediction file is missing.
        ValueError: Unknown object names, an object without test images, or a size mismatch.
    """
    dataset = PerSegDataset(root, reference_id=reference_id)
    pred_root = Path(pred_dir)
    _require_dir(pred_root, "prediction folder", PERSEG_PRED_LAYOUT)
    wanted = None if objects is None else list(objects)
    unknown = [] if wanted is None else [n for n in wanted if n not in dataset.names]
    if unknown:
        raise ValueError(f"unknown PerSeg objects {unknown}; objects in {dataset.root / 'Images'}: "
                         f"{', '.join(dataset.names)}")
    selected = dataset.objects if wanted is None else tuple(dataset[n] for n in wanted)
    scores = []
    for obj in selected:
        if not obj.test_ids:
            raise ValueError(f"object {obj.name!r} has no test images besides the reference {reference_id}")
        counts = []
        for stem, mask_path in zip(obj.test_ids, obj.test_masks, strict=True):
            pred_path = pred_root / obj.name / f"{stem}.png"
            if not pred_path.is_file():
                raise FileNotFoundError(f"prediction {pred_path} not found; expected {PERSEG_PRED_LAYOUT}")
            gt, pred = read_perseg_mask(mask_path), read_perseg_mask(pred_path)
            _check_shape(pred, gt, pred_path, mask_path)
            counts.append(perseg_image_counts(pred, gt, dilation_ratio))
        scores.append(score_perseg_object(obj.name, counts))
    return summarize_perseg(scores)


# ------------------------------------------------------------------ DAVIS 2017


@dataclass(frozen=True)
class DavisSequence:
    """One DAVIS sequence: sorted frame images and sorted annotation PNGs."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]

    @property
    def frame_ids(self) -> list[str]:
        """Stems of the annotation files (``"00000"``, ...), used to match predictions."""
        return [p.stem for p in self.annotations]


class Davis2017Dataset(_NamedIndex[DavisSequence]):
    """Index of a DAVIS 2017 folder (see the module docstring for the layout).

    Args:
        root: DAVIS root holding ``JPEGImages/``, ``Annotations/`` and ``ImageSets/``.
        sequences: Sequence names to use; default all names in ``ImageSets/2017/<subset>.txt``.
        subset: Image-set file name without ``.txt``.
        resolution: Resolution folder, ``"480p"`` or ``"Full-Resolution"``.
        require_images: Whether the JPEG frame folders must exist (not needed for scoring).

    Raises:
        FileNotFoundError: A folder, the image-set file or a sequence folder is missing.
        ValueError: A sequence has no annotations or no frames, or the image set is empty.
    """

    def __init__(
        self,
        root: PathLike,
        sequences: str | Iterable[str] | None = None,
        *,
        subset: str = "val",
        resolution: str = "480p",
        require_images: bool = True,
    ) -> None:
        self.root = Path(root)
        _require_dir(self.root, "DAVIS root", DAVIS_LAYOUT)
        self.image_root = self.root / "JPEGImages" / resolution
        self.annotation_root = self.root / "Annotations" / resolution
        _require_dir(self.annotation_root, "DAVIS annotation folder", DAVIS_LAYOUT)
        if require_images:
            _require_dir(self.image_root, "DAVIS image folder", DAVIS_LAYOUT)
        if sequences is None:
            names = self._read_image_set(subset)
        else:
            names = [sequences] if isinstance(sequences, str) else list(sequences)
        self._where = f"the loaded sequences of {self.root}"
        self._items = tuple(self._scan(n, require_images) for n in names)

    @property
    def sequences(self) -> tuple[DavisSequence, ...]:
        """Loaded sequences in image-set (or given) order."""
        return self._items

    def _read_image_set(self, subset: str) -> list[str]:
        set_file = self.root / "ImageSets" / "2017" / f"{subset}.txt"
        if not set_file.is_file():
            raise FileNotFoundError(f"DAVIS image set {set_file} not found; expected {DAVIS_LAYOUT}")
        names = [line.strip() for line in set_file.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"DAVIS image set {set_file} lists no sequences; expected one name per line")
        return names

    def _scan(self, name: str, require_images: bool) -> DavisSequence:
        ann_dir, img_dir = self.annotation_root / name, self.image_root / name
        _require_dir(ann_dir, f"annotation folder of sequence {name!r}", DAVIS_LAYOUT)
        annotations = tuple(sorted(p for p in ann_dir.glob("*.png") if _visible(p)))
        if not annotations:
            raise ValueError(f"no annotation PNGs in {ann_dir}; expected {DAVIS_LAYOUT}")
        frames: tuple[Path, ...] = ()
        if img_dir.is_dir():
            frames = tuple(sorted(p for p in img_dir.glob("*.jpg") if _visible(p)))
        if require_images and not frames:
            raise FileNotFoundError(f"no frames {img_dir / '00000.jpg'} ... found for sequence {name!r}; "
                                    f"expected {DAVIS_LAYOUT}")
        return DavisSequence(name=name, frames=frames, annotations=annotations)


def read_label_stack(paths: Iterable[PathLike]) -> NDArray[np.uint8]:
    """Read label masks of equal size into a ``(T, H, W)`` uint8 array."""
    path_list = [Path(p) for p in paths]
    masks = [read_davis_labels(p) for p in path_list]
    if not masks:
        raise ValueError("no mask files given; expected at least one")
    for p, m in zip(path_list, masks, strict=True):
        if m.shape != masks[0].shape:
            raise ValueError(f"mask {p} has shape {m.shape} but {path_list[0]} has {masks[0].shape}; "
                             "all frames of a sequence must be the same size")
    return np.stack(masks)


def evaluate_davis(
    root: PathLike,
    pred_dir: PathLike,
    sequences: str | Iterable[str] | None = None,
    *,
    subset: str = "val",
    resolution: str = "480p",
    ignore_void: bool = False,
    bound_th: float = 0.008,
) -> DavisReport:
    """Score DAVIS 2017 semi-supervised predictions (J, F, J&F as fractions).

    Predictions are matched to the GT annotations by file stem. The first and last
    frames are not scored, so their prediction files are optional; every other frame
    needs ``PRED_DIR/<seq>/<stem>.png``.

    Args:
        root: DAVIS 2017 root.
        pred_dir: Folder with one sub-folder of PNG label maps per sequence.
        sequences: Sequence names; default the ``ImageSets/2017/<subset>.txt`` list.
        subset: Image-set name used when ``sequences`` is None.
        resolution: Annotation resolution folder.
        ignore_void: Exclude GT pixels labelled 255 from J and F (the reference
            semi-supervised evaluation does not; see :func:`score_davis_sequence`).
        bound_th: Boundary tolerance (fraction of the diagonal, or pixels if >= 1).

    Returns:
        The :class:`~persam.eval.metrics.DavisReport`.

    Raises:
        FileNotFoundError: The layout is broken or a prediction frame is missing.
        ValueError: Too few frames, size mismatches, or more predicted objects than GT objects.
    """
    dataset = Davis2017Dataset(root, sequences, subset=subset, resolution=resolution, require_images=False)
    pred_root = Path(pred_dir)
    _require_dir(pred_root, "prediction folder", DAVIS_PRED_LAYOUT)
    scores = []
    for seq in dataset:
        gt = read_label_stack(seq.annotations)
        if gt.shape[0] < 3:
            raise ValueError(f"sequence {seq.name!r} has {gt.shape[0]} annotated frames; at least 3 are needed "
                             "because the first and last frames are not scored")
        pred = np.zeros_like(gt)
        for t in range(1, gt.shape[0] - 1):
            pred_path = pred_root / seq.name / f"{seq.annotations[t].stem}.png"
            if not pred_path.is_file():
                raise FileNotFoundError(f"prediction {pred_path} not found; expected {DAVIS_PRED_LAYOUT}")
            labels = read_davis_labels(pred_path)
            _check_shape(labels, gt[t], pred_path, seq.annotations[t])
            pred[t] = labels
        scores.extend(score_davis_sequence(seq.name, gt, pred, ignore_void=ignore_void, bound_th=bound_th))
    return summarize_davis(scores)
