"""``persam models add FILE [--model NAME]``: a downloaded checkpoint goes into the cache (verified by its
published SHA-256, else recognised by its keys and its hash recorded); later commands need no --checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import synthetic_photo
from extras import needs
from persam.backends import models
from persam.backends.builders import write_random_checkpoint
from persam.backends.checkpoints import file_sha256
from persam.cli.main import main


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "checkpoints"


@pytest.fixture
def tiny(tmp_path) -> Path:
    (tmp_path / "downloads").mkdir()
    return write_random_checkpoint("sam_tiny", tmp_path / "downloads" / "tiny.pth", seed=4)


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persam: error: "), lines
    return lines[0]


def test_add_list_and_a_later_load_without_checkpoint(home, tiny, refs, tmp_path, capsys) -> None:
    assert main(["models"]) == 0
    assert "sam_tiny" not in capsys.readouterr().out  # a test model is listed once a checkpoint of it is cached

    assert main(["models", "add", str(tiny)]) == 0
    out = capsys.readouterr().out
    digest = file_sha256(tiny)
    assert f"added sam_tiny checkpoint {home / 'sam_tiny.pt'}" in out and digest in out
    assert (home / "sam_tiny.pt").read_bytes() == tiny.read_bytes()
    record = json.loads((home / "sam_tiny.pt.added.json").read_text())
    assert (record["model"], record["sha256"], record["verified"]) == ("sam_tiny", digest, "key signature")
    assert record["source"] == str(tiny.resolve())
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]  # the atomic copy left no temp file

    assert main(["models"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sam_tiny ")]
    assert len(row) == 1 and "cached: sam_tiny.pt (added)" in row[0]

    from PIL import Image

    Image.fromarray(synthetic_photo(120, 160, seed=7)[0]).save(tmp_path / "photo.png")
    out_dir = tmp_path / "out"
    code = main(["segment", *refs, str(tmp_path / "photo.png"), "-o", str(out_dir), "--model", "sam_tiny"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert digest in json.dumps(manifest)  # the run loaded the added file, not random weights


def test_add_with_the_right_model_and_a_second_time(home, tiny, capsys) -> None:
    assert main(["models", "add", str(tiny), "--model", "sam_tiny"]) == 0
    assert main(["models", "add", str(home / "sam_tiny.pt")]) == 0  # the cached file itself: only recorded
    assert (home / "sam_tiny.pt").read_bytes() == tiny.read_bytes()


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "is not a PyTorch checkpoint or is damaged"),  # the file cut short
        (b"not a checkpoint", "is not a PyTorch checkpoint or is damaged"),
        ({"layer.weight": torch.zeros(2, 2)}, "its keys match no model persam knows"),
    ],
    ids=["cut", "text", "unknown-keys"],
)
def test_damaged_or_unknown_file_is_refused_in_one_line(home, tiny, tmp_path, capsys, content, words) -> None:
    bad = tmp_path / "bad.pth"
    if content is None:
        bad.write_bytes(tiny.read_bytes()[:4000])
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        torch.save(content, bad)
    assert main(["models", "add", str(bad)]) == 2
    line = one_line_error(capsys)
    assert str(bad) in line and words in line
    assert not home.exists() or not list(home.iterdir())  # nothing was cached


def test_a_file_of_another_model_is_refused_naming_both(home, tiny, capsys) -> None:
    assert main(["models", "add", str(tiny), "--model", "vit_t"]) == 2
    line = one_line_error(capsys)
    assert f"{tiny} is not a vit_t checkpoint: it looks like the tiny test SAM" in line and "(model sam_tiny)" in line
    assert main(["models", "add", str(tiny), "--model", "vit_b"]) == 2  # vit_b has a published SHA-256
    line = one_line_error(capsys)
    assert f"{tiny} is not the published vit_b checkpoint" in line and "SHA-256" in line
    assert main(["models", "add", str(tiny), "--model", "litemedsam"]) == 2
    assert "ship with its Python package" in one_line_error(capsys)
    assert main(["models", "add", str(home / "missing.pth")]) == 2
    assert "missing.pth" in one_line_error(capsys)
    assert not home.exists() or not list(home.iterdir())


def test_a_published_sha256_is_verified(home, tiny, monkeypatch, capsys) -> None:
    """A model whose publisher gives a SHA-256: the publisher's file is added by its hash, another refused."""
    entry = models.MODELS["sam_tiny"]
    url = "https://example.invalid/weights/sam_tiny_v1.pth"
    monkeypatch.setitem(models.MODELS, "sam_tiny", dataclasses.replace(entry, url=url, sha256=file_sha256(tiny)))
    assert main(["models", "add", str(tiny)]) == 0
    assert "the publisher's SHA-256 matches" in capsys.readouterr().out
    assert json.loads((home / "sam_tiny_v1.pth.added.json").read_text())["verified"] == "published sha256"

    other = write_random_checkpoint("sam_tiny", tiny.with_name("other.pth"), seed=5)  # same keys, other weights
    assert main(["models", "add", str(other)]) == 2
    line = one_line_error(capsys)
    assert "is not the published sam_tiny checkpoint" in line and str(other) in line
    assert main(["models", "add", str(other), "--model", "sam_tiny"]) == 2
    assert "differs from the publisher's" in one_line_error(capsys)
    assert (home / "sam_tiny_v1.pth").read_bytes() == tiny.read_bytes()  # the verified file stays


@needs("sam2")
def test_a_sam2_checkpoint_is_recognised_and_loaded_from_the_cache(home, tmp_path, capsys) -> None:
    from persam.backends.registry import create_backend

    ckpt = write_random_checkpoint("sam2_tiny", tmp_path / "sam2.pt", seed=1)  # {"model": state dict}
    assert main(["models", "add", str(ckpt)]) == 0
    assert "added sam2_tiny checkpoint" in capsys.readouterr().out
    backend = create_backend("sam2_tiny", device="cpu")  # no checkpoint given
    assert backend.family == "sam2" and backend.checkpoint_sha256 == file_sha256(ckpt)
