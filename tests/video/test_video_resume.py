"""``persam video`` again after an interruption keeps the finished frames and segments on from the first
missing one, exactly as an uninterrupted run; other settings start over."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam.jobs.video as jobs_video
from extras import require
from persam.cli.main import main
from persam.io import save_label_map as save_palette
from persam.session.video import VideoSession

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu", "--quiet"]
STOP_AT = 5  # the interrupted run stops while writing this frame


@pytest.fixture
def inputs(tmp_path, clip_factory) -> list[str]:
    clip = clip_factory(n_frames=9)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    save_palette(tmp_path / "first.png", clip.labels[0])
    return [str(folder), "--mask", str(tmp_path / "first.png")]


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_interrupted_video_resumes_where_it_stopped(tmp_path, inputs, monkeypatch):
    whole = tmp_path / "whole"
    assert main(["video", *inputs, "-o", str(whole), *TINY]) == 0
    manifest = json.loads((whole / "manifest.json").read_text())
    assert manifest["complete"] and manifest["frames"] == 9

    out = tmp_path / "out"
    real_save = jobs_video.save_label_map

    def interrupted(path, labels):
        if Path(path).name == f"{STOP_AT:05d}.png":
            raise KeyboardInterrupt
        real_save(path, labels)

    monkeypatch.setattr(jobs_video, "save_label_map", interrupted)
    assert main(["video", *inputs, "-o", str(out), *TINY]) == 130
    monkeypatch.setattr(jobs_video, "save_label_map", real_save)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["frames"] == STOP_AT
    kept = {name: (out / name).stat().st_mtime_ns for name in pngs(out)}
    assert sorted(kept) == [f"{i:05d}.png" for i in range(STOP_AT)]

    steps = []
    real_step = VideoSession.step
    monkeypatch.setattr(
        VideoSession, "step", lambda self, frame: steps.append(self.index + 1) or real_step(self, frame)
    )
    assert main(["video", *inputs, "-o", str(out), *TINY[:-1]]) == 0
    assert steps == list(range(STOP_AT, 9))  # only the missing frames were segmented
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # the finished ones were kept as they were
    ours, expect = pngs(out), pngs(whole)
    assert sorted(ours) == sorted(expect)
    for name in expect:
        np.testing.assert_array_equal(ours[name], expect[name], err_msg=name)
    assert json.loads((out / "manifest.json").read_text())["complete"]

    # a finished run is not redone; other settings (PerSAM-F) start over from frame 0
    steps.clear()
    assert main(["video", *inputs, "-o", str(out), *TINY]) == 0
    assert steps == []
    assert main(["video", *inputs, "-o", str(out), "--finetune", *TINY]) == 0
    assert steps == list(range(1, 9))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["method"] == "persam-f"


def test_resume_reports_the_earlier_frames(tmp_path, inputs, capsys):
    out = tmp_path / "out"
    assert main(["video", *inputs, "-o", str(out), *TINY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(frames=4, complete=False)  # as a kill after frame 3 leaves it
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "00006.png").unlink()
    assert main(["video", *inputs, "-o", str(out), *TINY[:-1]]) == 0
    assert "(4 of them by an earlier run of the same command)" in capsys.readouterr().out
    assert len(list(out.glob("*.png"))) == 9


def test_overlay_inside_the_output_folder_survives_the_temp_cleanup(tmp_path, inputs):
    require("av")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".00003.png.0123abcd.tmp"  # what a kill inside a write leaves
    stale.touch()
    import os

    os.utime(stale, (1e9, 1e9))
    assert main(["video", *inputs, "-o", str(out), "--overlay-video", str(out / "overlay.mp4"), *TINY]) == 0
    assert (out / "overlay.mp4").stat().st_size > 0 and not stale.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".persam.lock"]
