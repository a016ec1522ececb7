import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLE_DIR, synthetic_photo
from extras import require_path
from persam.cli.main import main


@pytest.fixture
def photos(tmp_path):
    ref, mask = synthetic_photo(seed=0)
    Image.fromarray(ref).save(tmp_path / "ref.jpg")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    targets = tmp_path / "targets"
    (targets / "sub").mkdir(parents=True)
    Image.fromarray(synthetic_photo(seed=1)[0]).save(targets / "a.jpg")
    Image.fromarray(synthetic_photo(200, 150, seed=2)[0]).save(targets / "sub" / "b.png")
    (targets / "notes.txt").write_text("not an image")
    return tmp_path


def _segment(photos, tiny_checkpoint, *extra):
    return main(
        [
            "segment",
            "--ref",
            str(photos / "ref.jpg"),
            "--ref-mask",
            str(photos / "ref_mask.png"),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            *extra,
        ]
    )


@pytest.mark.parametrize("finetune", [[], ["--finetune"]])
def test_segment_writes_masks(photos, tiny_checkpoint, finetune):
    out = photos / "out"
    assert _segment(photos, tiny_checkpoint, str(photos / "targets"), "-o", str(out), "--overlay", *finetune) == 0
    a, b = Image.open(out / "a.png"), Image.open(out / "sub" / "b.png")
    assert a.mode == "L" and a.size == (240, 180) and set(np.unique(np.asarray(a))) <= {0, 255}
    assert b.size == (150, 200)
    assert (out / "a_overlay.jpg").exists() and (out / "sub" / "b_overlay.jpg").exists()
    # no temp files left (the folder's run lock, persam.io.lock, stays)
    assert not list(out.rglob("*.txt")) and [p.name for p in out.rglob(".*")] == [".persam.lock"]


def test_unreadable_target_is_skipped_others_written(photos, tiny_checkpoint, capsys):
    broken = photos / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = photos / "out"
    code = _segment(photos, tiny_checkpoint, str(broken), str(photos / "targets" / "a.jpg"), "-o", str(out))
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and "Traceback" not in err
    assert (out / "a.png").exists() and not (out / "broken.png").exists()


@pytest.mark.parametrize(
    "change, expect",
    [
        (lambda p: Image.fromarray(np.zeros((180, 240), np.uint8)).save(p / "ref_mask.png"), "empty"),
        (lambda p: Image.fromarray(np.full((180, 240), 255, np.uint8)).save(p / "ref_mask.png"), "whole photo"),
        (lambda p: Image.fromarray(np.full((10, 10), 255, np.uint8)).save(p / "ref_mask.png"), "mask is 10x10"),
        (lambda p: (p / "ref.jpg").write_text("nope"), "not a readable image"),
    ],
)
def test_bad_reference_exits_2_with_one_line(photos, tiny_checkpoint, capsys, change, expect):
    change(photos)
    code = _segment(photos, tiny_checkpoint, str(photos / "targets"), "-o", str(photos / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expect in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_usage_errors(photos, tiny_checkpoint, capsys):
    assert (
        main(
            [
                "segment",
                "--ref",
                str(photos / "ref.jpg"),
                "--ref-mask",
                str(photos / "ref_mask.png"),
                "--model",
                "vit_q",
                str(photos / "targets"),
                "-o",
                str(photos / "o"),
            ]
        )
        == 2
    )
    assert "unknown model 'vit_q'" in capsys.readouterr().err
    assert _segment(photos, photos / "missing.pth", str(photos / "targets"), "-o", str(photos / "o")) == 2
    assert "missing.pth" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                "--ref",
                str(photos / "ref.jpg"),
                "--ref-mask",
                str(photos / "ref_mask.png"),
                "--model",
                "vit_t",
                "--checkpoint",
                str(tiny_checkpoint),
                str(photos / "targets"),
                "-o",
                str(photos / "o"),
            ]
        )
        == 2
    )
    assert "do not fit model type 'vit_t'" in capsys.readouterr().err


def test_models_lists_backends(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("vit_h", "vit_l", "vit_b", "vit_t", "litemedsam"):
        assert name in out
    assert "bf16" in out


@pytest.mark.slow
@pytest.mark.parametrize("finetune", [[], ["--finetune"]])
def test_segment_sample_photos_full_size_vit_t(tmp_path, finetune):
    """The README's main command on real photos with a random-weight MobileSAM checkpoint."""
    require_path(SAMPLE_DIR, "PerSeg sample photos")
    from persam.backends.builders import write_random_checkpoint

    ckpt = write_random_checkpoint("vit_t", tmp_path / "mobile_sam_random.pt", seed=0)
    images, masks = SAMPLE_DIR / "Images" / "cat", SAMPLE_DIR / "Annotations" / "cat"
    out = tmp_path / "out" / "cat"
    code = main(
        [
            "segment",
            "--ref",
            str(images / "00.jpg"),
            "--ref-mask",
            str(masks / "00.png"),
            "--model",
            "vit_t",
            "--checkpoint",
            str(ckpt),
            "--device",
            "cpu",
            str(images / "01.jpg"),
            str(images / "02.jpg"),
            "-o",
            str(out),
            *finetune,
        ]
    )
    assert code == 0
    for name in ("01", "02"):
        written = Image.open(out / f"{name}.png")
        assert written.size == Image.open(images / f"{name}.jpg").size
