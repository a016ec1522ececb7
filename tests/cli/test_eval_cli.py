"""``persam eval perseg`` and ``persam eval davis`` on tiny synthetic datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam.cli.main import main
from persam.eval.davis import evaluate_davis
from persam.eval.perseg import evaluate_perseg
from persam.io import save_label_map as save_palette  # DAVIS palette: colours differ from indices

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


def blob_photo(
    h: int, w: int, cx: float, cy: float, colour: tuple[int, int, int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    mask = ((x - cx) / (0.22 * w)) ** 2 + ((y - cy) / (0.25 * h)) ** 2 <= 1.0
    photo = rng.integers(60, 140, size=(h, w, 3)).astype(np.uint8)
    photo[mask] = colour
    return photo, mask


@pytest.fixture(scope="module")
def perseg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two objects x three 160x200 photos (00 = reference) with a coloured blob; palette PNG masks."""
    root = tmp_path_factory.mktemp("data") / "PerSeg"
    for k, (obj, colour) in enumerate((("red_ball", (220, 40, 40)), ("blue_cup", (40, 60, 220)))):
        for i, nn in enumerate(("00", "01", "02")):
            photo, mask = blob_photo(160, 200, 70 + 30 * i, 70 + 8 * i, colour, seed=10 * k + i)
            (root / "Images" / obj).mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo).save(root / "Images" / obj / f"{nn}.jpg", quality=95)
            save_palette(root / "Annotations" / obj / f"{nn}.png", mask.astype(np.uint8))
    return root


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("persam: error: ")
    return lines[0]


# ------------------------------------------------------------------ PerSeg


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_perseg_runs_the_model_and_scores(perseg_root: Path, tmp_path: Path, capsys, method: str) -> None:
    out, report = tmp_path / "pred", tmp_path / "sub" / "report.json"
    code = main(
        ["eval", "perseg", str(perseg_root), "--method", method, "--output", str(out), "--json", str(report), *TINY]
    )
    assert code == 0
    for obj in ("red_ball", "blue_cup"):
        assert sorted(p.name for p in (out / obj).iterdir()) == ["01.png", "02.png"]
        assert Image.open(out / obj / "01.png").size == (200, 160)

    data = json.loads(report.read_text())
    assert not list(report.parent.glob(".*"))  # no temporary file left behind
    expected = evaluate_perseg(perseg_root, out)
    assert data["miou"] == pytest.approx(expected.miou)
    assert data["biou"] == pytest.approx(expected.mbiou)
    assert set(data["objects"]) == {"red_ball", "blue_cup"}
    for o in expected.objects:
        assert data["objects"][o.name]["iou"] == pytest.approx(o.iou)
        assert data["objects"][o.name]["biou"] == pytest.approx(o.biou)
    assert data["method"] == method
    assert data["model"] == "sam_tiny"
    assert data["settings"]["without"] == []
    assert data["settings"]["guided_attention"] is True
    assert ("fit" in data["settings"]) == (method == "persam-f")

    printed = capsys.readouterr().out
    assert "red_ball" in printed and "blue_cup" in printed
    assert f"mIoU {expected.miou:.2f}" in printed and f"mBIoU {expected.mbiou:.2f}" in printed

    # scoring the written masks again gives the same figures
    again = tmp_path / "again.json"
    assert main(["eval", "perseg", str(perseg_root), "--pred", str(out), "--json", str(again)]) == 0
    scored = json.loads(again.read_text())
    assert scored["miou"] == pytest.approx(data["miou"]) and scored["objects"] == data["objects"]
    assert scored["method"] is None and scored["model"] is None


def test_perseg_pred_ground_truth_scores_100(perseg_root: Path, tmp_path: Path, capsys) -> None:
    pred = tmp_path / "gt"
    shutil.copytree(perseg_root / "Annotations", pred)
    report = tmp_path / "r.json"
    assert main(["eval", "perseg", str(perseg_root), "--pred", str(pred), "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["miou"] == pytest.approx(100.0) and data["biou"] == pytest.approx(100.0)
    assert "mIoU 100.00  mBIoU 100.00" in capsys.readouterr().out


def test_perseg_without_components_recorded(perseg_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "abl.json"
    argv = [
        "eval",
        "perseg",
        str(perseg_root),
        "--without",
        "guided-attention",
        "--without",
        "refinement",
        "--json",
        str(report),
        *TINY,
    ]
    assert main(argv) == 0
    data = json.loads(report.read_text())
    assert data["settings"]["without"] == ["guided-attention", "refinement"]
    assert data["settings"]["guided_attention"] is False and data["settings"]["refinement"] is False
    assert data["settings"]["semantic_prompt"] is True
    default_out = Path("persam-eval") / "perseg-persam-no-guided-attention-no-refinement"
    assert data["predictions"] == str(default_out)
    assert (tmp_path / default_out / "red_ball" / "02.png").is_file()


def test_perseg_without_is_refused_for_persam_f(perseg_root: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "eval",
            "perseg",
            str(perseg_root),
            "--method",
            "persam-f",
            "--without",
            "refinement",
            "--output",
            str(tmp_path / "o"),
            *TINY,
        ]
    )
    assert code == 2
    assert "PerSAM-F" in one_line_error(capsys.readouterr().err)


def test_perseg_missing_dataset(tmp_path: Path, capsys) -> None:
    assert main(["eval", "perseg", str(tmp_path / "nope"), *TINY]) == 2
    assert "PerSeg root" in one_line_error(capsys.readouterr().err)


def test_perseg_missing_prediction(perseg_root: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["eval", "perseg", str(perseg_root), "--pred", str(tmp_path / "empty")]) == 2
    assert "not found" in one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ DAVIS


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sequences x five 60x80 frames, two moving objects each (palette PNGs)."""
    root = tmp_path_factory.mktemp("data") / "DAVIS"
    for s, seq in enumerate(("cars", "dogs")):
        for t in range(5):
            labels = np.zeros((60, 80), dtype=np.uint8)
            labels[10 + t : 30 + t, 5 + 2 * t + s : 25 + 2 * t + s] = 1
            labels[35:55, 45 + 3 * t : 70 + t] = 2
            save_palette(root / "Annotations" / "480p" / seq / f"{t:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("cars\ndogs\n")
    return root


def test_davis_ground_truth_is_perfect(davis_root: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "davis.json"
    code = main(
        ["eval", "davis", str(davis_root), "--pred", str(davis_root / "Annotations" / "480p"), "--json", str(report)]
    )
    assert code == 0
    data = json.loads(report.read_text())
    for key in ("J&F", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
        assert data[key] == pytest.approx(1.0)
    assert set(data["objects"]) == {"cars_1", "cars_2", "dogs_1", "dogs_2"}
    assert data["objects"]["dogs_2"]["J&F"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "J&F" in printed and "F-Decay" in printed and "cars_2" in printed


def test_davis_shifted_prediction_scores_less(davis_root: Path, tmp_path: Path, capsys) -> None:
    pred = tmp_path / "shifted"
    for png in (davis_root / "Annotations" / "480p").rglob("*.png"):
        labels = np.asarray(Image.open(png))
        save_palette(pred / png.parent.name / png.name, np.roll(labels, 4, axis=1))
    report = tmp_path / "davis.json"
    assert (
        main(["eval", "davis", str(davis_root), "--pred", str(pred), "--sequences", "dogs", "--json", str(report)]) == 0
    )
    data = json.loads(report.read_text())
    expected = evaluate_davis(davis_root, pred, ["dogs"])
    assert data["J&F"] == pytest.approx(expected.jf_mean)
    assert 0.0 < data["J&F"] < 1.0
    assert set(data["objects"]) == {"dogs_1", "dogs_2"}
    assert data["sequences"] == ["dogs"]


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_davis_runs_the_video_method(davis_root: Path, tmp_path: Path, method: str) -> None:
    root = tmp_path / "DAVIS"
    shutil.copytree(davis_root, root)
    rng = np.random.default_rng(0)
    for png in (root / "Annotations" / "480p").rglob("*.png"):
        labels = np.asarray(Image.open(png))
        frame = rng.integers(60, 120, size=(60, 80, 3), dtype=np.uint8)
        frame[labels == 1] = (220, 40, 40)
        frame[labels == 2] = (40, 40, 220)
        out = root / "JPEGImages" / "480p" / png.parent.name / f"{png.stem}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(out)
    pred, report = tmp_path / "pred", tmp_path / "davis.json"
    code = main(
        [
            "eval",
            "davis",
            str(root),
            "--method",
            method,
            "--model",
            "sam_tiny",
            "--random-weights",
            "--device",
            "cpu",
            "--output",
            str(pred),
            "--json",
            str(report),
        ]
    )
    assert code == 0
    for seq in ("cars", "dogs"):
        written = sorted(p.name for p in (pred / seq).glob("*.png"))
        assert written == [f"{t:05d}.png" for t in range(5)]
        assert Image.open(pred / seq / "00003.png").mode == "P"
    data = json.loads(report.read_text())
    assert data["J&F"] == pytest.approx(evaluate_davis(root, pred).jf_mean)


def test_davis_missing_dataset(tmp_path: Path, capsys) -> None:
    (tmp_path / "pred").mkdir()
    assert main(["eval", "davis", str(tmp_path / "nope"), "--pred", str(tmp_path / "pred")]) == 2
    assert "DAVIS root" in one_line_error(capsys.readouterr().err)
