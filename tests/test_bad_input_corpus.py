"""A corpus of bad inputs, generated here, each run through the command line.

Every case asserts the exit status, a one-line message naming the file (no
traceback), and for batches that the good photo beside the bad one was still
written and the manifest tells what happened. Readable oddities (CMYK,
16-bit, RGBA, palette, EXIF-rotated) must simply work.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import synthetic_photo
from persam.cli.main import main

TINY = ["--model", "sam_tiny", "--device", "cpu", "--quiet"]


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` grey pixels, with one small compressed row stream."""
    raw = zlib.compress(b"\x00" * 64)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def jpeg_bytes(image: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


PHOTO, MASK = synthetic_photo(120, 160, seed=7)


def write_bad_target(kind: str, folder: Path) -> Path:
    """One unreadable target photo of the given kind."""
    if kind == "zero-byte":
        (path := folder / "empty.jpg").write_bytes(b"")
    elif kind == "text-as-jpeg":
        (path := folder / "notes.jpg").write_text("not a photo at all\n")
    elif kind == "truncated-jpeg":
        data = jpeg_bytes(PHOTO)
        (path := folder / "cut.jpg").write_bytes(data[: len(data) // 3])
    elif kind == "bomb-50000":
        path = png_header(folder / "bomb.png", 50_000, 50_000)
    elif kind == "huge-12000":
        path = png_header(folder / "huge.png", 12_000, 12_000)
    else:
        raise AssertionError(kind)
    return path


def write_odd_target(kind: str, folder: Path) -> tuple[Path, tuple[int, int]]:
    """A readable but unusual photo, and its (H, W) in display orientation."""
    h, w = PHOTO.shape[:2]
    path = folder / f"{kind}.png"
    if kind == "cmyk":
        path = folder / "cmyk.jpg"
        Image.fromarray(PHOTO).convert("CMYK").save(path, format="JPEG")
    elif kind == "16-bit":
        Image.fromarray(PHOTO[..., 0].astype(np.uint16) * 257).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([PHOTO, np.full((h, w), 200, np.uint8)])).save(path)
    elif kind == "palette":
        Image.fromarray(PHOTO).convert("P", palette=Image.ADAPTIVE).save(path)
    elif kind == "exif-rotated":
        path = folder / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise for display
        Image.fromarray(PHOTO).save(path, format="JPEG", exif=exif)
        return path, (w, h)
    return path, (h, w)


@pytest.fixture
def refs(tmp_path):
    Image.fromarray(PHOTO).save(tmp_path / "ref.png")
    Image.fromarray(MASK.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    return ["--ref", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "ref_mask.png")]


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("persam: error")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    return lines[0]


@pytest.mark.parametrize("kind", ["zero-byte", "text-as-jpeg", "truncated-jpeg", "bomb-50000", "huge-12000"])
def test_a_bad_target_is_skipped_and_the_batch_goes_on(tmp_path, refs, tiny_checkpoint, capsys, kind):
    photos = tmp_path / "photos"
    photos.mkdir()
    bad = write_bad_target(kind, photos)
    Image.fromarray(PHOTO).save(photos / "good.png")
    out = tmp_path / "out"
    status = main(["segment", *refs, str(photos), "-o", str(out), *TINY, "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err and "DecompressionBomb" not in err
    assert any(bad.name in line for line in err.splitlines()), err
    assert (out / "good.png").is_file() and not (out / f"{bad.stem}.png").exists()
    entries = {Path(e["input"]).name: e for e in json.loads((out / "manifest.json").read_text())["inputs"]}
    assert entries["good.png"]["status"] == "written"
    assert entries[bad.name]["status"] == "skipped" and entries[bad.name]["reason"]


def plain_equivalent(kind: str, path: Path) -> np.ndarray:
    """The (H, W, 3) uint8 RGB photo that ``path`` shows, by PIL's documented conversions (not persam's reader)."""
    img = Image.open(path)
    if kind == "16-bit":
        return np.repeat(PHOTO[..., :1], 3, axis=2)  # v * 257 in 16 bits is v in 8
    if kind == "rgba":  # composited on white
        return np.array(Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB"))
    if kind == "exif-rotated":
        return np.array(ImageOps.exif_transpose(img).convert("RGB"))
    return np.array(img.convert("RGB"))  # cmyk, palette


@pytest.mark.parametrize("kind", ["cmyk", "16-bit", "rgba", "palette", "exif-rotated"])
def test_unusual_but_valid_photos_are_segmented(tmp_path, refs, tiny_checkpoint, capsys, kind):
    """The mask of the unusual file equals the mask of the plain RGB photo it shows (one run, both inputs)."""
    path, hw = write_odd_target(kind, tmp_path)
    plain = tmp_path / f"plain-{kind}.png"
    Image.fromarray(plain_equivalent(kind, path)).save(plain)
    out = tmp_path / "out"
    args = ["segment", *refs, str(path), str(plain), "-o", str(out), *TINY, "--checkpoint", str(tiny_checkpoint)]
    status = main(args)
    assert status == 0, capsys.readouterr().err
    got, want = (np.array(Image.open(out / f"{p.stem}.png")) for p in (path, plain))
    assert got.shape == hw
    np.testing.assert_array_equal(got, want)


def bad_reference(kind: str, tmp_path: Path) -> tuple[list[str], str]:
    """(--ref/--ref-mask arguments, a word the message must contain)."""
    ref, mask = tmp_path / "ref.png", tmp_path / "mask.png"
    Image.fromarray(PHOTO).save(ref)
    h, w = MASK.shape
    if kind == "bomb":
        png_header(ref, 50_000, 50_000)
        Image.fromarray(MASK.astype(np.uint8) * 255).save(mask)
    elif kind == "zero-byte-photo":
        ref.write_bytes(b"")
        Image.fromarray(MASK.astype(np.uint8) * 255).save(mask)
    elif kind == "mask-wrong-size":
        Image.fromarray(np.full((h // 2, w), 255, np.uint8)).save(mask)
    elif kind == "mask-empty":
        Image.fromarray(np.zeros((h, w), np.uint8)).save(mask)
    elif kind == "mask-full":
        Image.fromarray(np.full((h, w), 255, np.uint8)).save(mask)
    elif kind == "mask-one-pixel":
        one = np.zeros((h, w), np.uint8)
        one[h // 2, w // 2] = 255
        Image.fromarray(one).save(mask)
    elif kind == "mask-is-text":
        mask.write_text("0 1 0\n")
    elif kind == "label-absent":
        Image.fromarray(MASK.astype(np.uint8)).save(mask)  # values 0 and 1
        return ["--ref", str(ref), "--ref-mask", str(mask), "--label", "7"], "7"
    return ["--ref", str(ref), "--ref-mask", str(mask)], (
        ref.name if kind in ("bomb", "zero-byte-photo") else mask.name
    )


@pytest.mark.parametrize(
    "kind",
    [
        "bomb",
        "zero-byte-photo",
        "mask-wrong-size",
        "mask-empty",
        "mask-full",
        "mask-one-pixel",
        "mask-is-text",
        "label-absent",
    ],
)
def test_a_bad_reference_is_one_line_and_exit_2(tmp_path, tiny_checkpoint, capsys, kind):
    args, word = bad_reference(kind, tmp_path)
    Image.fromarray(PHOTO).save(tmp_path / "target.png")
    out = tmp_path / "out"
    status = main(
        ["segment", *args, str(tmp_path / "target.png"), "-o", str(out), *TINY, "--checkpoint", str(tiny_checkpoint)]
    )
    line = one_line(capsys.readouterr().err)
    assert status == 2 and word in line, line
    assert not (out / "target.png").exists()


@pytest.mark.parametrize("kind", ["existing-file", "under-a-file"])
def test_a_bad_output_path_is_refused(tmp_path, refs, tiny_checkpoint, capsys, kind):
    (tmp_path / "taken").write_text("x")
    out = tmp_path / "taken" if kind == "existing-file" else tmp_path / "taken" / "sub"
    Image.fromarray(PHOTO).save(tmp_path / "target.png")
    status = main(
        ["segment", *refs, str(tmp_path / "target.png"), "-o", str(out), *TINY, "--checkpoint", str(tiny_checkpoint)]
    )
    line = one_line(capsys.readouterr().err)
    assert status == 2 and "taken" in line


@pytest.mark.parametrize("kind", ["random-bytes", "truncated", "zero-byte"])
def test_a_damaged_concept_is_refused(tmp_path, refs, tiny_checkpoint, capsys, kind):
    concept = tmp_path / "c.persam"
    assert main(["personalize", *refs, "-o", str(concept), *TINY[:-1], "--checkpoint", str(tiny_checkpoint)]) == 0
    data = concept.read_bytes()
    concept.write_bytes(
        {
            "random-bytes": np.random.default_rng(0).bytes(len(data)),
            "truncated": data[: len(data) // 2],
            "zero-byte": b"",
        }[kind]
    )
    Image.fromarray(PHOTO).save(tmp_path / "target.png")
    capsys.readouterr()
    status = main(
        [
            "segment",
            "--concept",
            str(concept),
            str(tmp_path / "target.png"),
            "-o",
            str(tmp_path / "out"),
            *TINY,
            "--checkpoint",
            str(tiny_checkpoint),
        ]
    )
    line = one_line(capsys.readouterr().err)
    assert status == 2 and "c.persam" in line


@pytest.mark.parametrize("kind", ["random-bytes", "zero-byte"])
def test_a_damaged_index_is_refused(tmp_path, refs, tiny_checkpoint, capsys, kind):
    index = tmp_path / "album.idx"
    index.write_bytes(np.random.default_rng(1).bytes(4096) if kind == "random-bytes" else b"")
    status = main(
        [
            "segment",
            *refs,
            "--index",
            str(index),
            "-o",
            str(tmp_path / "out"),
            *TINY,
            "--checkpoint",
            str(tiny_checkpoint),
        ]
    )
    line = one_line(capsys.readouterr().err)
    assert status == 2 and "album.idx" in line
    assert index.read_bytes() == (b"" if kind == "zero-byte" else np.random.default_rng(1).bytes(4096))


def test_a_checkpoint_of_another_family_is_named_in_one_short_line(tmp_path, refs, tiny_checkpoint, capsys):
    Image.fromarray(PHOTO).save(tmp_path / "target.png")
    status = main(
        [
            "segment",
            *refs,
            str(tmp_path / "target.png"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "vit_b",
            "--device",
            "cpu",
            "--checkpoint",
            str(tiny_checkpoint),
        ]
    )
    line = one_line(capsys.readouterr().err)
    assert status == 2 and "sam_tiny.pth" in line and len(line) < 400, line


def test_max_pixels_sets_the_limit_for_the_run(tmp_path, refs, tiny_checkpoint, capsys):
    Image.fromarray(PHOTO).save(tmp_path / "target.png")  # 160 x 120 = 19200 pixels
    out = tmp_path / "out"
    args = ["segment", *refs, str(tmp_path / "target.png"), "-o", str(out), *TINY, "--checkpoint", str(tiny_checkpoint)]
    line = one_line(capsys.readouterr().err) if main([*args, "--max-pixels", "10000"]) == 2 else None
    assert line is not None and "above the limit" in line and "--max-pixels" in line
    assert main([*args, "--max-pixels", "20000"]) == 0 and (out / "target.png").is_file()
    assert main(["segment", "--help"]) == 0 and "--max-pixels" in capsys.readouterr().out


def test_max_pixels_must_be_a_whole_number(capsys):
    assert main(["segment", "x.png", "-o", "out", "--max-pixels", "lots"]) == 2
    assert "--max-pixels takes a whole number" in capsys.readouterr().err
