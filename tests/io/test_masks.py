"""persam.io.masks: the one mask / label-map reader family and first-frame validation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from persam.io.masks import (
    MAX_OBJECT_IDS,
    as_label_map,
    davis_palette,
    first_frame_labels,
    read_binary_mask,
    read_label_map,
    save_label_map,
    save_mask,
)


def _labels() -> np.ndarray:
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:4] = 1
    labels[4:6, 5:8] = 3
    return labels


def _write(tmp_path, name, img: Image.Image):
    path = tmp_path / name
    img.save(path)
    return path


@pytest.fixture
def files(tmp_path):
    labels = _labels()
    save_label_map(tmp_path / "p.png", labels)
    return {
        "palette": tmp_path / "p.png",
        "rgb_davis": _write(tmp_path, "rgb.png", Image.open(tmp_path / "p.png").convert("RGB")),
        "rgba_davis": _write(tmp_path, "rgba.png", Image.open(tmp_path / "p.png").convert("RGBA")),
        "gray": _write(tmp_path, "gray.png", Image.fromarray(labels)),
        "gray_as_rgb": _write(tmp_path, "g3.png", Image.fromarray(np.repeat(labels[..., None], 3, axis=2))),
        "gray_alpha": _write(tmp_path, "la.png", Image.fromarray(labels).convert("LA")),
        "sixteen": _write(tmp_path, "i16.png", Image.fromarray(labels.astype(np.uint16) * 1000)),
    }


@pytest.mark.parametrize("kind", ["palette", "rgb_davis", "rgba_davis", "gray", "gray_as_rgb", "gray_alpha"])
def test_label_map_reads_ids(files, kind):
    out = read_label_map(files[kind])
    assert out.dtype == np.uint8 and np.array_equal(out, _labels())


def test_label_map_refuses_colours_when_asked(files):
    np.testing.assert_array_equal(read_label_map(files["gray_as_rgb"], colours="refuse"), _labels())
    with pytest.raises(ValueError, match=r"colour \(RGB\) image; expected a palette"):
        read_label_map(files["rgb_davis"], colours="refuse")


def test_label_map_unknown_colour_and_big_values(tmp_path, files):
    odd = np.zeros((4, 4, 3), np.uint8)
    odd[0, 0] = (1, 2, 3)
    path = _write(tmp_path, "odd.png", Image.fromarray(odd))
    with pytest.raises(ValueError, match=r"colour \(1, 2, 3\) is not a DAVIS palette colour") as excinfo:
        read_label_map(path)
    assert str(path) in str(excinfo.value)
    with pytest.raises(ValueError, match="ids outside 0..255"):
        read_label_map(files["sixteen"])


@pytest.mark.parametrize("kind", ["palette", "rgb_davis", "rgba_davis", "gray", "gray_as_rgb", "gray_alpha", "sixteen"])
def test_binary_mask_values_rule(files, kind):
    out = read_binary_mask(files[kind])
    assert out.dtype == bool and np.array_equal(out, _labels() > 0)


def test_binary_mask_values_vs_gray_rule(tmp_path):
    # palette index 1 drawn in black: an object by its index value, background by its displayed colour
    img = Image.fromarray(np.array([[0, 1, 2]], np.uint8), mode="P")
    pal = davis_palette()
    pal[3:6] = [0, 0, 0]
    img.putpalette(pal)
    path = _write(tmp_path, "p.png", img)
    assert read_binary_mask(path).tolist() == [[False, True, True]]
    assert read_binary_mask(path, rule="gray").tolist() == [[False, False, True]]
    # colour rounding as OpenCV's BT.601 grey: (0, 0, 4) -> 0, (0, 0, 5) -> 1
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1], rgb[0, 2] = (0, 0, 4), (0, 0, 5)
    path = _write(tmp_path, "rgb.png", Image.fromarray(rgb))
    assert read_binary_mask(path, rule="gray").tolist() == [[False, False, True]]
    assert read_binary_mask(path).tolist() == [[False, True, True]]  # any nonzero channel


def test_binary_mask_label(files):
    for kind in ("palette", "rgb_davis", "gray"):
        assert np.array_equal(read_binary_mask(files[kind], label=3), _labels() == 3), kind
    assert np.array_equal(read_binary_mask(_labels(), label=1), _labels() == 1)


def test_absent_label_names_the_values_present(files):
    with pytest.raises(ValueError) as excinfo:
        read_binary_mask(files["palette"], label=2)
    msg = str(excinfo.value)
    assert msg.startswith(f"label 2 is not in {files['palette']} (values present: 0, 1, 3)")
    with pytest.raises(ValueError, match=r"label 7 is not in the mask \(values present: 0, 1, 3\)"):
        read_binary_mask(_labels(), label=7)


def test_binary_mask_arrays_and_exif(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1, 2] = 9
    assert read_binary_mask(rgb).tolist() == [[False, True], [False, False]]
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2, 1\)"):
        read_binary_mask(np.zeros((2, 2, 2, 1)))
    # EXIF orientation 6 (rotate 90 clockwise for display): masks read in display orientation, like photos
    stored = np.zeros((2, 3), np.uint8)
    stored[0, 0] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=100)
    out = read_binary_mask(path)
    assert out.shape == (3, 2) and out[0, 1] and out.sum() == 1


def test_unreadable_and_missing_files(tmp_path):
    text = tmp_path / "mask.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image") as excinfo:
        read_label_map(text)
    assert str(text) in str(excinfo.value)
    with pytest.raises(FileNotFoundError):
        read_binary_mask(tmp_path / "nope.png")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 2, 2)), "shape"),
        (np.zeros((2, 2), np.float32), "dtype float32"),
        (np.full((2, 2), 300, np.int32), "outside 0..255"),
        (np.full((2, 2), -1, np.int8), "outside 0..255"),
    ],
)
def test_as_label_map_rejects(array, message):
    with pytest.raises(ValueError, match=message):
        as_label_map(array, "the first-frame label map")


def test_as_label_map_converts():
    assert as_label_map(np.array([[True, False]])).tolist() == [[1, 0]]
    out = as_label_map(np.array([[7, 0]], np.int64))
    assert out.dtype == np.uint8 and out.tolist() == [[7, 0]]


def test_first_frame_labels_checks():
    labels = _labels()
    assert np.array_equal(first_frame_labels(labels, (6, 8)), labels)
    with pytest.raises(ValueError, match="m.png is 8x6 but the frame is 9x5; pass the mask drawn on the first frame"):
        first_frame_labels(labels, (5, 9), name="m.png")
    with pytest.raises(ValueError, match="m.png has no object pixel"):
        first_frame_labels(np.zeros((6, 8), np.uint8), (6, 8), name="m.png")
    with pytest.raises(ValueError, match="dtype"):
        first_frame_labels(labels.astype(np.float32), (6, 8))


def test_first_frame_labels_void_and_drawn_masks():
    binary = (_labels() > 0).astype(np.uint8) * 255
    assert np.array_equal(first_frame_labels(binary, drawn_mask=True), _labels() > 0)
    assert np.array_equal(first_frame_labels(binary), binary)  # API arrays keep their ids
    with pytest.raises(ValueError, match="no object pixel"):
        first_frame_labels(binary, void=255)  # DAVIS: 255 = void, not an object
    with_void = _labels().copy()
    with_void[0, 0] = 255
    assert np.array_equal(first_frame_labels(with_void, void=255), _labels())
    soft = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
    assert MAX_OBJECT_IDS < 47
    with pytest.raises(ValueError, match="anti-aliased"):
        first_frame_labels(soft, drawn_mask=True)
    assert np.array_equal(first_frame_labels(soft), soft)


def test_absent_label_through_the_cli(tmp_path, tiny_checkpoint, capsys):
    from persam.cli.main import main
    from persam.jobs.synthetic import tiled_photo

    ref, mask = tiled_photo(seed=0)
    Image.fromarray(ref).save(tmp_path / "ref.jpg")
    labels = np.where(mask, 2, 0).astype(np.uint8)
    save_label_map(tmp_path / "ref_mask.png", labels)
    rc = main(
        [
            "segment",
            "--ref",
            str(tmp_path / "ref.jpg"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "--label",
            "5",
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            str(tmp_path / "ref.jpg"),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"label 5 is not in {tmp_path / 'ref_mask.png'} (values present: 0, 2)" in err
    assert "empty" not in err


def _zlib_level(png: bytes) -> int:
    """FLEVEL of the first IDAT chunk's zlib header: 0 fastest, 1 fast, 2 default, 3 best."""
    start = png.index(b"IDAT") + 4
    return png[start + 1] >> 6


def test_saved_mask_is_0_and_255_of_any_truthy_array_at_the_fastest_level(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((40, 60)) > 0.5
    for given in (mask, mask[:, ::2], mask.astype(np.float32), mask.astype(np.uint8) * 7):
        out = tmp_path / "m.png"
        save_mask(out, given)
        back = np.array(Image.open(out))
        assert back.dtype == np.uint8 and set(np.unique(back)) <= {0, 255}
        assert np.array_equal(back > 0, np.asarray(given) != 0)
        assert _zlib_level(out.read_bytes()) == 0  # MASK_PNG_LEVEL = 1 is zlib's fastest class
