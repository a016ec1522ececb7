"""persam.io.images: the one image reader: pixel-limit guard, awkward files, modes (all files made in tmp_path)."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from persam.io import images
from persam.io.images import DEFAULT_MAX_PIXELS, load_image, max_pixels, open_image, set_max_pixels
from persam.io.masks import read_binary_mask


def _png_header(path, w: int, h: int) -> None:
    """A PNG that declares w x h 8-bit grey pixels and holds none (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture
def restore_limit():
    yield
    set_max_pixels(DEFAULT_MAX_PIXELS)


def _one_line(exc: pytest.ExceptionInfo, path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_default_limit_is_64_megapixels():
    assert max_pixels() == DEFAULT_MAX_PIXELS == 64_000_000


@pytest.mark.parametrize("size", [(50000, 50000), (12000, 12000)])
def test_huge_images_are_refused_from_the_header(tmp_path, size):
    path = tmp_path / "bomb.png"
    if size == (12000, 12000):
        Image.new("1", size).save(path)  # a real, fully decodable 144-megapixel PNG
    else:
        _png_header(path, *size)
    pil_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ValueError) as excinfo:
            load_image(path)
        with pytest.raises(ValueError):
            read_binary_mask(path)
    msg = _one_line(excinfo, path)
    assert f"{size[0]}x{size[1]}" in msg and "megapixels" in msg and "--max-pixels" in msg
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # Pillow's own setting is left as it was


def test_limit_argument_and_process_setting(tmp_path, restore_limit):
    path = tmp_path / "p.png"
    Image.new("RGB", (100, 60), (10, 20, 30)).save(path)
    assert load_image(path).shape == (60, 100, 3)
    with pytest.raises(ValueError, match="above the limit of 0.005 megapixels"):
        open_image(path, limit=5000)
    set_max_pixels(5000)
    with pytest.raises(ValueError, match=r"100x60 is 0.006 megapixels, above the limit of 0.005"):
        load_image(path)
    assert open_image(path, limit=None).size == (100, 60)
    set_max_pixels(None)
    assert load_image(path).shape == (60, 100, 3)
    big = tmp_path / "big.png"
    Image.new("1", (12000, 12000)).save(big)
    assert open_image(big, load=False).size == (12000, 12000)  # no limit: Pillow's check is not in the way


@pytest.mark.parametrize("bad", [0, -5, 2.5, "64", True])
def test_set_max_pixels_rejects(bad, restore_limit):
    with pytest.raises(ValueError, match="positive whole number"):
        set_max_pixels(bad)


def _jpeg_bytes(size=(64, 48)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, content",
    [
        ("truncated.jpg", _jpeg_bytes()[:300]),
        ("truncated.png", _png_bytes()[:200]),
        ("empty.jpg", b""),
        ("text.jpg", b"this is a text file, not a JPEG\n"),
        ("garbage.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),
    ],
)
def test_broken_files_give_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as excinfo:
        load_image(path)
    assert "not a readable image" in _one_line(excinfo, path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_conversion_error_gives_one_line(tmp_path, monkeypatch):
    path = tmp_path / "exif.jpg"
    path.write_bytes(_jpeg_bytes())

    def broken_exif(img):
        raise SyntaxError("malformed EXIF directory")

    monkeypatch.setattr(images.ImageOps, "exif_transpose", broken_exif)
    with pytest.raises(ValueError) as excinfo:
        load_image(path)
    assert "cannot read the orientation or colours of this RGB image (SyntaxError)" in _one_line(excinfo, path)


def _rgb_ok(arr: np.ndarray, hw) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (*hw, 3)


def test_modes_give_rgb_uint8(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk)  # red in CMYK
    out = load_image(cmyk)
    _rgb_ok(out, (30, 40))
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60

    sixteen = tmp_path / "i16.png"
    Image.fromarray(np.full((30, 40), 65535, np.uint16)).save(sixteen)
    out = load_image(sixteen)
    _rgb_ok(out, (30, 40))
    assert (out == 255).all()
    # intermediate 16-bit values go to the nearest 8-bit value, round(v * 255 / 65535), in files and arrays alike
    values = np.array([0, 128, 129, 257, 1000, 32767, 32768, 40000, 65534, 65535], np.uint16)
    want = np.array([0, 0, 1, 1, 4, 127, 128, 156, 255, 255], np.uint8)
    ramp = np.tile(values, (3, 1))
    Image.fromarray(ramp).save(sixteen)
    for got in (load_image(sixteen), load_image(ramp)):
        _rgb_ok(got, ramp.shape)
        np.testing.assert_array_equal(got, np.repeat(np.tile(want, (3, 1))[..., None], 3, axis=2))

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(rgba)  # fully transparent: composited on white
    out = load_image(rgba)
    _rgb_ok(out, (30, 40))
    assert (out == 255).all()

    pal = tmp_path / "p.png"
    img = Image.new("P", (40, 30), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.save(pal)
    out = load_image(pal)
    _rgb_ok(out, (30, 40))
    assert out[0, 0].tolist() == [10, 200, 30]


def test_exif_rotation_gives_display_orientation(tmp_path):
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    _rgb_ok(out, (40, 30))
    assert out[:15].mean() > 200 and out[25:].mean() < 50  # stored left half is the top when displayed


def test_frame_size_check_uses_the_guard(tmp_path, restore_limit):
    from persam.io.frames import image_size

    path = tmp_path / "f.png"
    Image.new("1", (12000, 9000)).save(path)
    with pytest.raises(ValueError, match="12000x9000 is 108 megapixels"):
        image_size(path)
    set_max_pixels(None)
    assert image_size(path) == (12000, 9000)


def test_pillow_limit_is_restored_after_errors(tmp_path):
    path = tmp_path / "text.jpg"
    path.write_text("no")
    before = images.Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError):
        load_image(path)
    assert images.Image.MAX_IMAGE_PIXELS == before
