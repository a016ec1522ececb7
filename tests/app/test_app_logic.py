"""The web app's logic, without a browser: tiny random-weight SAM, synthetic photos."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import persam
from clips import write_video
from conftest import synthetic_photo
from persam.app import batch, files, video, workspace


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return persam.load("sam_tiny", random_weights=True, device="cpu")


@pytest.fixture
def ref_path(tmp_path) -> Path:
    path = tmp_path / "dog.png"
    Image.fromarray(synthetic_photo(seed=5)[0]).save(path)
    return path


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG announcing w x h pixels with one tiny data chunk (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- files


def test_read_photo_refuses_a_decompression_bomb(tmp_path):
    bomb = png_header_only(tmp_path / "huge.png", 40000, 40000)
    with pytest.raises(ValueError, match="huge.png: 40000x40000 is 1600 megapixels, above the limit"):
        files.read_photo(bomb)
    with pytest.raises(ValueError, match="huge.png: 10000x10000 is 100 megapixels, above the limit"):
        files.read_photo(png_header_only(tmp_path / "huge.png", 10000, 10000))


def test_read_photo_names_the_upload_not_the_server_path(tmp_path):
    bad = tmp_path / "deep" / "notes.jpg"
    bad.parent.mkdir()
    bad.write_text("hello")
    with pytest.raises(ValueError) as info:
        files.read_photo(bad)
    assert str(info.value).startswith("notes.jpg: not a readable image") and str(tmp_path) not in str(info.value)


def test_expand_uploads_opens_zips_and_refuses_escapes(tmp_path):
    Image.fromarray(synthetic_photo(seed=1)[0]).save(tmp_path / "a.jpg")
    good = tmp_path / "photos.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.write(tmp_path / "a.jpg", "trip/a.jpg")
        z.write(tmp_path / "a.jpg", "b.jpg")
        z.writestr("readme.txt", "not a photo")
    pairs = files.expand_uploads([tmp_path / "a.jpg", good], tmp_path / "work")
    assert [stem for _, stem in pairs] == ["a", "trip/a", "b"]
    assert all(p.is_file() for p, _ in pairs)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.jpg", b"x")
    with pytest.raises(ValueError, match="outside the zip"):
        files.expand_uploads([evil], tmp_path / "work")
    assert not (tmp_path / "escape.jpg").exists()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK not really")
    with pytest.raises(ValueError, match="broken.zip: not a readable zip"):
        files.expand_uploads([broken], tmp_path / "work")


# ------------------------------------------------------------ workspace


def test_clicks_make_masks_from_one_encoding(model, ref_path):
    ws = workspace.Workspace()
    before = model.backend.encoder_calls
    workspace.set_photo(ws, model, ref_path)
    first = workspace.click(ws, model, 108, 81, "object")
    assert first.startswith("mask:") and ws.mask is not None and ws.mask.any()
    one = ws.mask.copy()
    workspace.click(ws, model, 20, 20, "background")
    assert "corner" in workspace.click(ws, model, 60, 40, "box")
    workspace.click(ws, model, 170, 150, "box")
    assert ws.clicks.box_xyxy == (60, 40, 171, 151)
    assert model.backend.encoder_calls - before == 1  # the upload encoded; clicks ran the decoder only
    expect = model.mask_from_prompts(
        ws.photo, points_xy=[[108, 81], [20, 20]], point_labels=[1, 0], box_xyxy=[60, 40, 171, 151]
    )
    np.testing.assert_array_equal(ws.mask, expect.mask)
    workspace.undo(ws, model)  # the box
    workspace.undo(ws, model)  # the background point
    np.testing.assert_array_equal(ws.mask, one)
    view = ws.view()
    assert view.shape == ws.photo.shape and not np.array_equal(view, ws.photo)


def test_click_outside_and_before_upload_are_messages(model, ref_path):
    ws = workspace.Workspace()
    with pytest.raises(ValueError, match="upload one first"):
        workspace.click(ws, model, 1, 1, "object")
    workspace.set_photo(ws, model, ref_path)
    with pytest.raises(ValueError, match="outside the 240x180 photo"):
        workspace.click(ws, model, 240, 5, "object")
    assert "background" in workspace.click(ws, model, 5, 5, "background") and ws.mask is None


def test_uploaded_masks_are_checked(model, ref_path, tmp_path):
    ws = workspace.Workspace()
    workspace.set_photo(ws, model, ref_path)
    cases = {
        "empty.png": (np.zeros((180, 240), np.uint8), "empty"),
        "full.png": (np.full((180, 240), 255, np.uint8), "whole photo"),
        "small.png": (np.full((10, 10), 255, np.uint8), "10x10 but the photo is 240x180"),
    }
    for name, (pixels, message) in cases.items():
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(ValueError, match=message):
            workspace.upload_mask(ws, tmp_path / name)
    good = synthetic_photo(seed=5)[1]
    Image.fromarray(good.astype(np.uint8) * 255).save(tmp_path / "good.png")
    assert "pixels" in workspace.upload_mask(ws, tmp_path / "good.png")
    np.testing.assert_array_equal(ws.mask, good)


def test_learn_save_load(model, ref_path, tmp_path):
    ws = workspace.Workspace()
    with pytest.raises(ValueError, match="no reference yet"):
        workspace.learn(ws, model, finetune=False, without=[], presence_threshold=None)
    workspace.set_photo(ws, model, ref_path)
    with pytest.raises(ValueError, match="no mask yet"):
        workspace.keep_reference(ws)
    workspace.click(ws, model, 60, 40, "box")
    workspace.click(ws, model, 170, 150, "box")
    workspace.keep_reference(ws)
    message = workspace.learn(ws, model, finetune=True, without=["refinement"], presence_threshold=0.25)
    assert "persam-f from 1 reference" in message and "without refinement" in message
    expect = model.personalize(ws.photo, box=[60, 40, 171, 151], finetune=True, settings=ws.concept.settings)
    assert torch.equal(ws.concept.target.direction("mean"), expect.target.direction("mean"))
    saved = workspace.save(ws, tmp_path / "concepts")
    other = workspace.Workspace()
    assert "persam-f" in workspace.load(other, model, saved)
    assert other.concept.presence_threshold == pytest.approx(0.25)
    assert torch.allclose(other.concept.weights, ws.concept.weights)
    (tmp_path / "bad.persam").write_text("nope")
    with pytest.raises(ValueError, match="bad.persam"):
        workspace.load(other, model, tmp_path / "bad.persam")


# ---------------------------------------------------------------- batch


def test_segment_uploads_writes_a_zip_with_every_output(model, ref_path, tmp_path):
    concept = model.personalize(ref_path, box=[60, 40, 170, 150])
    uploads = []
    for i, name in enumerate(["one.jpg", "two.png"]):
        Image.fromarray(synthetic_photo(seed=20 + i)[0]).save(tmp_path / name)
        uploads.append(tmp_path / name)
    (tmp_path / "notes.jpg").write_text("not a photo")
    steps = []
    result = batch.segment_uploads(
        concept,
        [*uploads, tmp_path / "notes.jpg"],
        batch.BatchOptions(),
        tmp_path / "work",
        progress=lambda done, total, what: steps.append((done, total)),
    )
    assert steps[0] == (0, 3) and steps[-1] == (3, 3)
    assert [c.split(" · ")[0] for _, c in result.gallery] == ["one.jpg", "two.png"]
    assert len(result.skipped) == 1 and result.skipped[0].startswith("notes.jpg: not a readable image")
    with zipfile.ZipFile(result.zip_path) as z:
        names = set(z.namelist())
        assert {
            "one.png",
            "two.png",
            "one_overlay.jpg",
            "two_overlay.jpg",
            "manifest.json",
            "annotations.json",
        } <= names
        manifest = json.loads(z.read("manifest.json"))
        coco = json.loads(z.read("annotations.json"))
        for upload in uploads:
            with z.open(upload.stem + ".png") as f:
                got = np.asarray(Image.open(f)) > 0
            np.testing.assert_array_equal(got, concept.segment(np.asarray(Image.open(upload).convert("RGB"))).mask)
    assert [e["status"] for e in manifest["inputs"]] == ["written", "written", "skipped"]
    assert manifest["inputs"][0]["input"] == "one.jpg"  # the upload's name, not the server's path
    assert len(coco["images"]) == 2


def test_segment_uploads_needs_photos(model, ref_path, tmp_path):
    concept = model.personalize(ref_path, box=[60, 40, 170, 150])
    with pytest.raises(ValueError, match="no photo uploaded"):
        batch.segment_uploads(concept, [], batch.BatchOptions(), tmp_path)
    with pytest.raises(ValueError, match="number of instances"):
        batch.BatchOptions(max_instances=0)


# ---------------------------------------------------------------- video


def test_video_from_first_frame_clicks(model, tmp_path):
    frames = [synthetic_photo(96, 128, seed=1, center=(0.5, 0.3 + 0.05 * i))[0] for i in range(3)]
    clip = write_video(tmp_path / "walk.mp4", frames, fps=5)
    vw = video.VideoWork()
    with pytest.raises(ValueError, match="upload a clip"):
        video.click(vw, model, 1, 5, 5, "object")
    assert "walk.mp4: 128x96" in video.open_video(vw, model, clip)
    video.click(vw, model, 1, 40, 48, "object")
    video.click(vw, model, 2, 100, 20, "object")
    with pytest.raises(ValueError, match="object id"):
        video.click(vw, model, 0, 5, 5, "object")
    labels = vw.labels()
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 1).any()
    mp4, zip_path, summary = video.run(vw, model, finetune=False, detect_absent=False, workdir=tmp_path / "work")
    assert mp4.stat().st_size > 0 and "3 frames" in summary
    with zipfile.ZipFile(zip_path) as z:
        assert z.namelist() == ["00000.png", "00001.png", "00002.png"]
        with z.open("00000.png") as f:
            np.testing.assert_array_equal(np.asarray(Image.open(f)), labels)


def test_video_that_does_not_decode_is_a_message(model, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    with pytest.raises(ValueError, match="broken.mp4") as info:
        video.open_video(video.VideoWork(), model, bad)
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(ValueError, match="no object picked|upload a clip"):
        video.run(video.VideoWork(), model, finetune=False, detect_absent=False, workdir=tmp_path)
