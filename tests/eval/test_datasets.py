"""Tests for persam.eval.perseg and persam.eval.davis on synthetic PerSeg and DAVIS 2017 folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam.eval.davis import Davis2017Dataset, evaluate_davis, read_davis_labels
from persam.eval.davis_metrics import score_davis_sequence, summarize_davis
from persam.eval.perseg import PerSegDataset, evaluate_perseg, read_perseg_mask
from persam.io import save_label_map as save_palette  # DAVIS palette: colours differ from indices


def save_gray(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path)


def save_jpg(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, dtype=np.uint8)).save(path)


def square(h: int = 5, w: int = 5) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[1:4, 1:4] = True
    return m


# ------------------------------------------------------------------ PerSeg


@pytest.fixture
def perseg(tmp_path: Path) -> Path:
    """Two objects, each with reference 00 and test images 01, 02 (GT = centred 3x3 square)."""
    root = tmp_path / "PerSeg"
    for obj in ("dog", "cat"):
        for nn in ("00", "01", "02"):
            save_jpg(root / "Images" / obj / f"{nn}.jpg", 5, 5)
            save_gray(root / "Annotations" / obj / f"{nn}.png", square())
    return root


def write_perseg_preds(pred: Path, cat_02: np.ndarray) -> None:
    for nn in ("01", "02"):
        save_palette(pred / "dog" / f"{nn}.png", square().astype(np.uint8))  # palette index 1 = object
    save_gray(pred / "cat" / "01.png", square())
    save_gray(pred / "cat" / "02.png", cat_02)


def test_perseg_listing(perseg: Path) -> None:
    ds = PerSegDataset(perseg)
    assert ds.names == ["cat", "dog"] and len(ds) == 2
    cat = ds["cat"]
    assert cat.ref_image == perseg / "Images" / "cat" / "00.jpg"
    assert cat.ref_mask == perseg / "Annotations" / "cat" / "00.png"
    assert cat.test_ids == ("01", "02")
    assert cat.test_pairs == [
        (perseg / "Images" / "cat" / f"{nn}.jpg", perseg / "Annotations" / "cat" / f"{nn}.png") for nn in ("01", "02")
    ]
    with pytest.raises(KeyError, match="known"):
        ds["bird"]


def test_evaluate_perseg_scores(perseg: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_perseg_preds(pred, np.zeros((5, 5), dtype=bool))  # cat/02 missed entirely
    save_gray(pred / "cat" / "00.png", np.zeros((5, 5), dtype=bool))  # reference is never scored
    report = evaluate_perseg(perseg, pred)
    scores = {o.name: o for o in report.objects}
    assert scores["cat"].iou == pytest.approx(50.0)  # 9 / (9 + 9)
    assert scores["cat"].biou == pytest.approx(50.0)  # 8 / (8 + 8)
    assert scores["dog"].iou == pytest.approx(100.0) and scores["dog"].biou == pytest.approx(100.0)
    assert report.miou == pytest.approx(75.0) and report.mbiou == pytest.approx(75.0)
    assert report.as_dict()["mIoU"] == pytest.approx(75.0)
    only_dog = evaluate_perseg(perseg, pred, objects=["dog"])
    assert only_dog.miou == pytest.approx(100.0)
    with pytest.raises(ValueError, match="unknown PerSeg objects"):
        evaluate_perseg(perseg, pred, objects=["bird"])


def test_evaluate_perseg_errors(perseg: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_perseg_preds(pred, square())
    (pred / "cat" / "02.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"prediction .*cat.02\.png not found; expected PRED_DIR"):
        evaluate_perseg(perseg, pred)
    save_gray(pred / "cat" / "02.png", np.zeros((5, 6), dtype=bool))
    with pytest.raises(ValueError, match="must match the GT size"):
        evaluate_perseg(perseg, pred)
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        evaluate_perseg(perseg, tmp_path / "nowhere")


def test_perseg_missing_annotations_folder(tmp_path: Path) -> None:
    save_jpg(tmp_path / "Images" / "cat" / "00.jpg", 4, 4)
    with pytest.raises(FileNotFoundError, match=r"Annotations not found; expected ROOT/Images/<object>/NN\.jpg"):
        PerSegDataset(tmp_path)


def test_perseg_missing_images_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Images not found"):
        PerSegDataset(tmp_path)


def test_perseg_missing_reference(perseg: Path) -> None:
    (perseg / "Images" / "dog" / "00.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"reference image .*dog.00\.jpg not found"):
        PerSegDataset(perseg)


def test_perseg_image_without_annotation(perseg: Path) -> None:
    (perseg / "Annotations" / "cat" / "02.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotation .*cat.02\.png for image"):
        PerSegDataset(perseg)


def test_perseg_annotation_without_image(perseg: Path) -> None:
    save_gray(perseg / "Annotations" / "cat" / "07.png", square())
    with pytest.raises(ValueError, match=r"07\.png has no image"):
        PerSegDataset(perseg)


def test_perseg_missing_object_annotation_folder(perseg: Path) -> None:
    save_jpg(perseg / "Images" / "bird" / "00.jpg", 5, 5)
    with pytest.raises(FileNotFoundError, match="annotation folder of object 'bird'"):
        PerSegDataset(perseg)


def test_perseg_no_objects(tmp_path: Path) -> None:
    (tmp_path / "Images").mkdir()
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(ValueError, match="no object folders"):
        PerSegDataset(tmp_path)


def test_read_binary_mask_modes(tmp_path: Path) -> None:
    save_palette(tmp_path / "p.png", square().astype(np.uint8))
    np.testing.assert_array_equal(read_perseg_mask(tmp_path / "p.png"), square())
    save_gray(tmp_path / "l.png", square())
    np.testing.assert_array_equal(read_perseg_mask(tmp_path / "l.png"), square())
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (0, 0, 4)  # gray (cv2 weights) rounds to 0, as cv2.imread + BGR2GRAY
    rgb[0, 2] = (0, 0, 5)  # gray rounds to 1
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_perseg_mask(tmp_path / "rgb.png"), [[False, False, True]])


# ------------------------------------------------------------------ DAVIS


def davis_frame(t: int, two: bool = True) -> np.ndarray:
    labels = np.zeros((12, 16), dtype=np.uint8)
    labels[2:6, 2 + t : 6 + t] = 1
    if two:
        labels[7:11, 9:14] = 2
    return labels


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    """Sequences 'bear' (2 objects, 5 frames) and 'dog' (1 object, 4 frames)."""
    root = tmp_path / "DAVIS"
    for seq, n, two in (("bear", 5, True), ("dog", 4, False)):
        for t in range(n):
            save_jpg(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", 12, 16)
            save_palette(root / "Annotations" / "480p" / seq / f"{t:05d}.png", davis_frame(t, two))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("dog\nbear\n")
    return root


def write_davis_preds(pred: Path, seq: str, frames: list[np.ndarray], skip_ends: bool = True) -> None:
    for t, labels in enumerate(frames):
        if skip_ends and t in (0, len(frames) - 1):
            continue  # first and last frames are not scored: predictions optional
        save_palette(pred / seq / f"{t:05d}.png", labels)


def test_davis_listing(davis: Path) -> None:
    ds = Davis2017Dataset(davis)
    assert ds.names == ["dog", "bear"]
    bear = ds["bear"]
    assert bear.frame_ids == ["00000", "00001", "00002", "00003", "00004"]
    assert bear.frames[0] == davis / "JPEGImages" / "480p" / "bear" / "00000.jpg"
    assert bear.annotations[-1] == davis / "Annotations" / "480p" / "bear" / "00004.png"
    assert Davis2017Dataset(davis, "bear").names == ["bear"]
    assert Davis2017Dataset(davis, ["bear", "dog"]).names == ["bear", "dog"]


def test_read_davis_labels(tmp_path: Path, davis: Path) -> None:
    labels = read_davis_labels(davis / "Annotations" / "480p" / "bear" / "00000.png")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, davis_frame(0))  # palette indices, not colours
    Image.fromarray(davis_frame(1), mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_davis_labels(tmp_path / "l.png"), davis_frame(1))
    Image.fromarray(np.repeat(davis_frame(1)[..., None], 3, axis=2)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(read_davis_labels(tmp_path / "gray_rgb.png"), davis_frame(1))
    Image.open(davis / "Annotations" / "480p" / "bear" / "00000.png").convert("RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"colour \(RGB\) image; expected a palette"):
        read_davis_labels(tmp_path / "rgb.png")


def test_evaluate_davis_perfect_and_missing_object(davis: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_davis_preds(pred, "dog", [davis_frame(t, two=False) for t in range(4)])
    write_davis_preds(pred, "bear", [davis_frame(t, two=False) for t in range(5)])  # object 2 never predicted
    report = evaluate_davis(davis, pred)
    d = report.as_dict()
    assert set(d) >= {"J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay", "bear_1", "bear_2"}
    assert d["dog_1"]["J-Mean"] == 1.0 and d["bear_1"]["F-Mean"] == 1.0
    assert d["bear_2"]["J-Mean"] == 0.0 and d["bear_2"]["F-Mean"] == 0.0
    assert report.j.mean == pytest.approx(2 / 3) and report.f.mean == pytest.approx(2 / 3)
    assert report.jf_mean == pytest.approx(2 / 3) and report.j.recall == pytest.approx(2 / 3)


def test_evaluate_davis_matches_array_scoring(davis: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pred = tmp_path / "pred"
    stacks = {}
    for seq, n, two in (("bear", 5, True), ("dog", 4, False)):
        frames = [np.roll(davis_frame(t, two), int(rng.integers(-2, 3)), axis=1) for t in range(n)]
        write_davis_preds(pred, seq, frames, skip_ends=False)
        stacks[seq] = (np.stack([davis_frame(t, two) for t in range(n)]), np.stack(frames))
    expected = summarize_davis(
        [s for seq in ("dog", "bear") for s in score_davis_sequence(seq, *stacks[seq])]
    ).as_dict()
    got = evaluate_davis(davis, pred, sequences=None).as_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_evaluate_davis_errors(davis: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_davis_preds(pred, "dog", [davis_frame(t, two=False) for t in range(4)])
    (pred / "dog" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"prediction .*dog.00002\.png not found; expected PRED_DIR/<seq>"):
        evaluate_davis(davis, pred, "dog")
    frames = [davis_frame(t) for t in range(4)]  # ids 1 and 2 but 'dog' has one object
    write_davis_preds(pred, "dog", frames)
    with pytest.raises(ValueError, match="object id 2 but the first GT frame has only 1"):
        evaluate_davis(davis, pred, "dog")
    save_palette(pred / "dog" / "00001.png", np.zeros((10, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match="must match the GT size"):
        evaluate_davis(davis, pred, "dog")


def test_davis_malformed_layouts(davis: Path, tmp_path: Path) -> None:
    (davis / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.txt not found; expected ROOT/JPEGImages/480p"):
        Davis2017Dataset(davis)
    with pytest.raises(FileNotFoundError, match="annotation folder of sequence 'cat'"):
        Davis2017Dataset(davis, ["cat"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"DAVIS annotation folder .*Annotations.480p not found"):
        Davis2017Dataset(empty, "dog")
    for jpg in (davis / "JPEGImages" / "480p" / "dog").glob("*.jpg"):
        jpg.unlink()
    with pytest.raises(FileNotFoundError, match="no frames"):
        Davis2017Dataset(davis, "dog")
    assert Davis2017Dataset(davis, "dog", require_images=False).sequences[0].frames == ()


def test_davis_too_few_frames(davis: Path, tmp_path: Path) -> None:
    (davis / "Annotations" / "480p" / "dog" / "00003.png").unlink()
    (davis / "Annotations" / "480p" / "dog" / "00002.png").unlink()
    (tmp_path / "pred" / "dog").mkdir(parents=True)
    with pytest.raises(ValueError, match="at least 3"):
        evaluate_davis(davis, tmp_path / "pred", "dog")
