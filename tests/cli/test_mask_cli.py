"""``persam mask``: SAM's mask from clicks or a box, written as a PNG."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLE_DIR, synthetic_photo
from extras import require_path
from persam.cli.main import main

MIN_IOU = 0.99
SAMPLES = Path(os.environ.get("PERSAM_SAMPLE_DIR", SAMPLE_DIR))  # the photos, wherever this checkout lives


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture
def ref(tmp_path) -> Path:
    path = tmp_path / "ref.jpg"
    Image.fromarray(synthetic_photo(seed=0)[0]).save(path)
    return path


def _mask(tiny_checkpoint, *argv: str) -> int:
    return main(["mask", *argv, "--model", "sam_tiny", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])


def test_mask_from_a_box_and_points_writes_png_and_overlay(ref, tiny_checkpoint, capsys, tmp_path):
    out = tmp_path / "m.png"
    assert _mask(tiny_checkpoint, str(ref), "--box", "60,40,170,150", "-o", str(out), "--overlay") == 0
    written = np.asarray(Image.open(out))
    assert written.shape == (180, 240) and set(np.unique(written)) <= {0, 255}
    assert (tmp_path / "m_overlay.jpg").exists()
    assert "wrote" in capsys.readouterr().out
    import persam

    model = persam.load("sam_tiny", tiny_checkpoint, device="cpu")
    expect = model.mask_from_prompts(np.asarray(Image.open(ref).convert("RGB")), box_xyxy=[60, 40, 170, 150]).mask
    np.testing.assert_array_equal(written > 0, expect)
    out2 = tmp_path / "p.png"
    assert _mask(tiny_checkpoint, str(ref), "--point", "108,81", "--negative-point", "20,20", "-o", str(out2)) == 0
    expect2 = model.mask_from_prompts(
        np.asarray(Image.open(ref).convert("RGB")), points_xy=[[108, 81], [20, 20]], point_labels=[1, 0]
    ).mask
    np.testing.assert_array_equal(np.asarray(Image.open(out2)) > 0, expect2)


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--point", "240,10"], "outside the 240x180 photo"),
        (["--point", "10,-3"], "outside"),
        (["--box", "0,0,500,100"], "outside"),
        (["--box", "100,100,50,50"], "empty"),
        (["--point", "10;20"], "malformed"),
        (["--point", "ten,20"], "malformed"),
        (["--box", "1,2,3"], "malformed"),
        (["--negative-point", "10,10"], "only negative"),
        ([], "no prompt"),
    ],
)
def test_bad_coordinates_exit_2_with_one_line(ref, tiny_checkpoint, capsys, tmp_path, argv, expect):
    out = tmp_path / "m.png"
    assert _mask(tiny_checkpoint, str(ref), *argv, "-o", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err, err
    assert not out.exists()


def test_not_an_image_exits_2(tiny_checkpoint, capsys, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    assert _mask(tiny_checkpoint, str(bad), "--point", "1,1", "-o", str(tmp_path / "m.png")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.jpg" in err


@pytest.mark.slow
def test_mask_on_sample_photos_matches_mobile_sam_predictor(tmp_path):
    """`persam mask` vs ``mobile_sam.SamPredictor`` on one random-weight MobileSAM checkpoint, real photos."""
    require_path(SAMPLES, "PerSeg sample photos (set PERSAM_SAMPLE_DIR)")
    from persam.backends.builders import write_random_checkpoint

    ckpt = write_random_checkpoint("vit_t", tmp_path / "mobile_sam_random.pt", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import SamPredictor, sam_model_registry
    predictor = SamPredictor(sam_model_registry["vit_t"](checkpoint=str(ckpt)).eval())
    report, failures = [], []
    for name in ("cat", "duck_toy"):
        path = SAMPLES / "Images" / name / "00.jpg"
        pixels = np.asarray(Image.open(path).convert("RGB"))
        h, w = pixels.shape[:2]
        predictor.set_image(pixels)
        box = [w // 4, h // 4, 3 * w // 4, 3 * h // 4]
        cases = {
            "box": (["--box", ",".join(map(str, box))], dict(box=np.asarray(box, float), multimask_output=False)),
            "points": (
                ["--point", f"{w // 2},{h // 2}", "--negative-point", f"{w // 10},{h // 10}"],
                dict(
                    point_coords=np.asarray([[w // 2, h // 2], [w // 10, h // 10]], float),
                    point_labels=np.asarray([1, 0]),
                    multimask_output=True,
                ),
            ),
        }
        for case, (argv, kwargs) in cases.items():
            out = tmp_path / f"{name}_{case}.png"
            code = main(
                [
                    "mask",
                    str(path),
                    *argv,
                    "-o",
                    str(out),
                    "--model",
                    "vit_t",
                    "--checkpoint",
                    str(ckpt),
                    "--device",
                    "cpu",
                ]
            )
            assert code == 0
            ours = np.asarray(Image.open(out)) > 0
            masks, scores, _ = predictor.predict(**kwargs)
            official = masks[int(np.argmax(scores))]
            value = iou(ours, official)
            report.append(f"{name} {case}: IoU {value:.4f}, official area {official.mean():.3f} of the photo")
            if not (official.any() and not official.all()) or value < MIN_IOU:
                failures.append(report[-1])
    print("\n" + "\n".join(report))
    assert not failures, failures
