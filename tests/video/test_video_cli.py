"""``persam video`` on frame folders and PyAV-written videos, including bad input."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import write_video
from extras import require
from persam.cli.main import main
from persam.io import save_label_map as save_palette  # DAVIS palette: colours differ from indices

av = require("av")

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


def read_video(path: Path) -> tuple[int, tuple[int, int], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        shapes = [f.to_ndarray(format="rgb24").shape[:2] for f in container.decode(stream)]
        return len(shapes), shapes[0], stream.average_rate


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("persam: error: ")
    return lines[0]


def frame_folder(root: Path, clip) -> Path:
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return folder


def test_video_file_round_trip_with_overlay(tmp_path, clip):
    video = tmp_path / "clip.mp4"
    write_video(video, clip.frames, fps=10)
    mask = tmp_path / "first.png"
    save_palette(mask, clip.labels[0])
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    rc = main(["video", str(video), "--mask", str(mask), "-o", str(out), "--overlay-video", str(overlay), *TINY])
    assert rc == 0
    written = sorted(p.name for p in out.iterdir())
    # the manifest: for a resume; the lock: one run at a time (persam.io.lock)
    assert written == [".persam.lock"] + [f"{i:05d}.png" for i in range(len(clip.frames))] + ["manifest.json"]
    first = Image.open(out / "00000.png")
    assert first.mode == "P" and first.size == (128, 96)
    assert np.array_equal(np.asarray(first), clip.labels[0])
    assert set(np.unique(np.asarray(Image.open(out / "00003.png")))) <= {0, 1, 2, 3}
    n, hw, rate = read_video(overlay)
    assert (n, hw, rate) == (len(clip.frames), (96, 128), 10)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_frame_folder_with_binary_mask_and_finetune(tmp_path, clip, capsys):
    folder = frame_folder(tmp_path, clip)
    mask = tmp_path / "first.png"
    Image.fromarray(np.where(clip.labels[0] == 2, 255, 0).astype(np.uint8)).save(mask)
    out, overlay = tmp_path / "out", tmp_path / "ov.mp4"
    rc = main(
        [
            "video",
            str(folder),
            "--mask",
            str(mask),
            "-o",
            str(out),
            "--finetune",
            "--overlay-video",
            str(overlay),
            *TINY,
        ]
    )
    assert rc == 0
    assert (
        capsys.readouterr().out.strip()
        == f"persam video: {len(clip.frames)} frames of 1 object written to {out} and {overlay}"
    )
    first = np.asarray(Image.open(out / "00000.png"))
    assert set(np.unique(first)) == {0, 1}  # 0/255 -> one object, id 1
    for i in range(1, len(clip.frames)):
        assert set(np.unique(np.asarray(Image.open(out / f"{i:05d}.png")))) <= {0, 1}
    assert read_video(overlay)[::2] == (len(clip.frames), 25)


def test_presence_threshold_option(tmp_path, clip):
    """A threshold above any cosine similarity: every later frame is empty; the first keeps its mask."""
    folder = frame_folder(tmp_path, clip)
    mask = tmp_path / "first.png"
    save_palette(mask, clip.labels[0])
    out = tmp_path / "out"
    rc = main(["video", str(folder), "--mask", str(mask), "-o", str(out), "--presence-threshold", "1.01", *TINY])
    assert rc == 0
    assert np.asarray(Image.open(out / "00000.png")).any()
    for i in range(1, len(clip.frames)):
        assert not np.asarray(Image.open(out / f"{i:05d}.png")).any()
    rc = main(
        ["video", str(folder), "--mask", str(mask), "-o", str(tmp_path / "out2"), "--detect-absent", "--quiet", *TINY]
    )
    assert rc == 0 and len(list((tmp_path / "out2").glob("*.png"))) == len(clip.frames)


def test_output_checks_come_before_the_model(tmp_path, clip, capsys, monkeypatch):
    import importlib.util

    import persam.session.photo

    monkeypatch.setattr(
        persam.session.photo, "load", lambda *a, **k: pytest.fail("the model was loaded before the checks")
    )
    folder = frame_folder(tmp_path, clip)
    mask = tmp_path / "first.png"
    save_palette(mask, clip.labels[0])
    (tmp_path / "file").write_text("x")
    rc = main(["video", str(folder), "--mask", str(mask), "-o", str(tmp_path / "file"), *TINY])
    assert rc == 2 and "is a file" in one_line_error(capsys.readouterr().err)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    rc = main(
        [
            "video",
            str(folder),
            "--mask",
            str(mask),
            "-o",
            str(tmp_path / "o"),
            "--overlay-video",
            str(tmp_path / "v.mp4"),
            *TINY,
        ]
    )
    assert rc == 2 and 'pip install "persam[video]"' in one_line_error(capsys.readouterr().err)


def test_mixed_frame_sizes(tmp_path, clip, capsys):
    folder = frame_folder(tmp_path, clip)
    Image.fromarray(clip.frames[3][:80]).save(folder / "00003.png")
    mask = tmp_path / "first.png"
    save_palette(mask, clip.labels[0])
    rc = main(["video", str(folder), "--mask", str(mask), "-o", str(tmp_path / "out"), *TINY])
    line = one_line_error(capsys.readouterr().err)
    assert rc == 2 and "00003.png is 128x80" in line and "resize all frames" in line
    assert not (tmp_path / "out").exists()


def test_mask_of_another_size_and_empty_mask(tmp_path, clip, capsys):
    folder = frame_folder(tmp_path, clip)
    small = tmp_path / "small.png"
    save_palette(small, clip.labels[0][:, :100])
    rc = main(["video", str(folder), "--mask", str(small), "-o", str(tmp_path / "out"), *TINY])
    line = one_line_error(capsys.readouterr().err)
    assert rc == 2 and "small.png is 100x96 but the frames" in line and "first frame" in line
    empty = tmp_path / "empty.png"
    save_palette(empty, np.zeros((96, 128), np.uint8))
    rc = main(["video", str(folder), "--mask", str(empty), "-o", str(tmp_path / "out"), *TINY])
    line = one_line_error(capsys.readouterr().err)
    assert rc == 2 and "empty.png has no object pixel" in line
    rc = main(["video", str(folder), "--mask", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"), *TINY])
    assert rc == 2 and "missing.png" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("name, options", [("cut.mp4", {"movflags": "faststart"}), ("cut.avi", None)])
def test_truncated_video_keeps_the_decoded_frames(tmp_path, clip_factory, capsys, name, options):
    long_clip = clip_factory(n_frames=24, seed=3)
    video = tmp_path / name
    write_video(video, long_clip.frames, options=options)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 6 // 10])
    mask = tmp_path / "first.png"
    save_palette(mask, long_clip.labels[0])
    out = tmp_path / "out"
    rc = main(["video", str(video), "--mask", str(mask), "-o", str(out), *TINY])
    line = one_line_error(capsys.readouterr().err)
    written = len(list(out.glob("*.png")))
    assert rc == 2 and str(video) in line and f"the {written} frames decoded were segmented into" in line
    assert 1 <= written < 24
    assert "decoding failed after" in line or "the video ends after" in line


def test_unreadable_video_and_wrong_input(tmp_path, clip, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    mask = tmp_path / "first.png"
    save_palette(mask, clip.labels[0])
    rc = main(["video", str(junk), "--mask", str(mask), "-o", str(tmp_path / "out"), *TINY])
    assert rc == 2 and "junk.mp4: not a readable video" in one_line_error(capsys.readouterr().err)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    rc = main(["video", str(text), "--mask", str(mask), "-o", str(tmp_path / "out"), *TINY])
    assert rc == 2 and "not a video file" in one_line_error(capsys.readouterr().err)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    rc = main(["video", str(empty), "--mask", str(mask), "-o", str(tmp_path / "out"), *TINY])
    assert rc == 2 and "no image files" in one_line_error(capsys.readouterr().err)


def test_label_map_formats(tmp_path):
    from persam.io.masks import first_frame_labels, read_label_map

    def load_label_map(path):
        return first_frame_labels(read_label_map(path), name=str(path), drawn_mask=True)

    labels = np.zeros((7, 9), np.uint8)
    labels[1:3, 1:4], labels[4:6, 5:8] = 1, 3
    save_palette(tmp_path / "p.png", labels)
    Image.open(tmp_path / "p.png").convert("RGB").save(tmp_path / "rgb.png")  # DAVIS colours -> ids
    Image.fromarray(labels).save(tmp_path / "gray.png")
    Image.fromarray(labels > 0).save(tmp_path / "bits.png")
    for name in ("p.png", "rgb.png", "gray.png"):
        assert np.array_equal(load_label_map(tmp_path / name), labels), name
    assert np.array_equal(load_label_map(tmp_path / "bits.png"), (labels > 0).astype(np.uint8))
    soft = (np.arange(7 * 9).reshape(7, 9) * 4).astype(np.uint8)
    Image.fromarray(soft).save(tmp_path / "soft.png")
    with pytest.raises(ValueError, match="anti-aliased"):
        load_label_map(tmp_path / "soft.png")
    odd = np.zeros((7, 9, 3), np.uint8)
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="not a DAVIS palette colour"):
        load_label_map(tmp_path / "odd.png")


def test_overlay_writer_pads_odd_sizes(tmp_path):
    from persam.io.frames import OverlayWriter, tint

    labels = np.zeros((7, 9), np.uint8)
    labels[2:5, 3:6] = 2
    tinted = tint(np.full((7, 9, 3), 100, np.uint8), labels)
    assert tinted[3, 4].tolist() != [100, 100, 100] and tinted[0, 0].tolist() == [100, 100, 100]
    writer = OverlayWriter(tmp_path / "o.mp4", Fraction(30000, 1001), (7, 9))
    for _ in range(4):
        writer.write(tinted)
    writer.close()
    n, hw, rate = read_video(tmp_path / "o.mp4")
    assert n == 4 and hw == (8, 10) and abs(float(rate) - 29.97) < 0.01
