"""The DAVIS 2017 layout and scoring of DAVIS predictions.

DAVIS 2017: ``ROOT/JPEGImages/480p/<seq>/00000.jpg``, ``ROOT/Annotations/480p/<seq>/00000.png``
(palette PNG, pixel value = object id, 255 = void), ``ROOT/ImageSets/2017/val.txt`` (one
sequence per line), predictions ``PRED_DIR/<seq>/00000.png`` (palette/grayscale ids).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from persam.errors import InputError, MissingInputError
from persam.eval.common import NamedIndex, PathLike, check_same_shape, is_visible, require_dir
from persam.eval.davis_metrics import DavisReport, score_davis_sequence, summarize_davis
from persam.io.masks import read_label_map

DAVIS_LAYOUT = (
    "ROOT/JPEGImages/480p/<seq>/00000.jpg, ROOT/Annotations/480p/<seq>/00000.png and ROOT/ImageSets/2017/val.txt"
)
DAVIS_PRED_LAYOUT = "PRED_DIR/<seq>/<frame>.png with pixel value = object id, named like the GT annotations"


def read_davis_labels(path: PathLike) -> NDArray[np.uint8]:
    """A DAVIS annotation or prediction as ``(H, W)`` uint8 object ids (palette indices / grey levels).

    ``persam.io.masks.read_label_map`` with ``colours="refuse"``: a colour image that is not all grey is
    an error, since colours cannot be mapped back to the ids the annotation used.
    """
    return read_label_map(path, colours="refuse")


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


class Davis2017Dataset(NamedIndex[DavisSequence]):
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
        require_dir(self.root, "DAVIS root", DAVIS_LAYOUT)
        self.image_root = self.root / "JPEGImages" / resolution
        self.annotation_root = self.root / "Annotations" / resolution
        require_dir(self.annotation_root, "DAVIS annotation folder", DAVIS_LAYOUT)
        if require_images:
            require_dir(self.image_root, "DAVIS image folder", DAVIS_LAYOUT)
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
            raise MissingInputError(f"DAVIS image set {set_file} not found; expected {DAVIS_LAYOUT}")
        names = [line.strip() for line in set_file.read_text().splitlines() if line.strip()]
        if not names:
            raise InputError(f"DAVIS image set {set_file} lists no sequences; expected one name per line")
        return names

    def _scan(self, name: str, require_images: bool) -> DavisSequence:
        ann_dir, img_dir = self.annotation_root / name, self.image_root / name
        require_dir(ann_dir, f"annotation folder of sequence {name!r}", DAVIS_LAYOUT)
        annotations = tuple(sorted(p for p in ann_dir.glob("*.png") if is_visible(p)))
        if not annotations:
            raise InputError(f"no annotation PNGs in {ann_dir}; expected {DAVIS_LAYOUT}")
        frames: tuple[Path, ...] = ()
        if img_dir.is_dir():
            frames = tuple(sorted(p for p in img_dir.glob("*.jpg") if is_visible(p)))
        if require_images and not frames:
            raise MissingInputError(
                f"no frames {img_dir / '00000.jpg'} ... found for sequence {name!r}; expected {DAVIS_LAYOUT}"
            )
        return DavisSequence(name=name, frames=frames, annotations=annotations)


def read_label_stack(paths: Iterable[PathLike]) -> NDArray[np.uint8]:
    """Read label masks of equal size into a ``(T, H, W)`` uint8 array."""
    path_list = [Path(p) for p in paths]
    masks = [read_davis_labels(p) for p in path_list]
    if not masks:
        raise InputError("no mask files given; expected at least one")
    for p, m in zip(path_list, masks, strict=True):
        if m.shape != masks[0].shape:
            raise InputError(
                f"mask {p} has shape {m.shape} but {path_list[0]} has {masks[0].shape}; "
                "all frames of a sequence must be the same size"
            )
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
        The :class:`~persam.eval.davis_metrics.DavisReport`.

    Raises:
        FileNotFoundError: The layout is broken or a prediction frame is missing.
        ValueError: Too few frames, size mismatches, or more predicted objects than GT objects.
    """
    dataset = Davis2017Dataset(root, sequences, subset=subset, resolution=resolution, require_images=False)
    pred_root = Path(pred_dir)
    require_dir(pred_root, "prediction folder", DAVIS_PRED_LAYOUT)
    scores = []
    for seq in dataset:
        gt = read_label_stack(seq.annotations)
        if gt.shape[0] < 3:
            raise InputError(
                f"sequence {seq.name!r} has {gt.shape[0]} annotated frames; at least 3 are needed "
                "because the first and last frames are not scored"
            )
        pred = np.zeros_like(gt)
        for t in range(1, gt.shape[0] - 1):
            pred_path = pred_root / seq.name / f"{seq.annotations[t].stem}.png"
            if not pred_path.is_file():
                raise MissingInputError(f"prediction {pred_path} not found; expected {DAVIS_PRED_LAYOUT}")
            labels = read_davis_labels(pred_path)
            check_same_shape(labels, gt[t], pred_path, seq.annotations[t])
            pred[t] = labels
        scores.extend(score_davis_sequence(seq.name, gt, pred, ignore_void=ignore_void, bound_th=bound_th))
    return summarize_davis(scores)
