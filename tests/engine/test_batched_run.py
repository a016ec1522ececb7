"""``persam segment --batch``: photos decoded together by the engine's executor give the masks of a
photo-by-photo run (IoU >= 0.999), in input order, with one decoder call per stage for each group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from persam.cli.main import main
from persam.method import decoder as decoder_module

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


@pytest.fixture
def album(tmp_path: Path, refs) -> dict:
    """Five photos of two sizes, indexed into an .idx file, and a saved concept."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        h, w = (120, 160) if i % 2 else (150, 110)
        Image.fromarray(synthetic_photo(h, w, seed=70 + i, center=(0.3 + 0.1 * i, 0.5))[0]).save(photos / f"p{i}.png")
    assert main(["personalize", *refs, "-o", str(tmp_path / "c.persam"), *TINY]) == 0
    assert main(["index", str(photos), "-o", str(tmp_path / "a.idx"), "--dtype", "float32", "--quiet", *TINY]) == 0
    return {"photos": photos, "concept": str(tmp_path / "c.persam"), "index": str(tmp_path / "a.idx")}


def _calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = decoder_module.predict

    def counted(backend, encoded, points, boxes, masks, *args, **kwargs):
        calls.append(int(encoded.embedding.shape[0]))  # photos in this decoder call
        return original(backend, encoded, points, boxes, masks, *args, **kwargs)

    monkeypatch.setattr(decoder_module, "predict", counted)
    return calls


def _run(album: dict, out: Path, *extra: str) -> tuple[dict, dict]:
    code = main(["segment", "--concept", album["concept"], "-o", str(out), "--quiet", *extra, *TINY])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    masks = {e["input"]: np.asarray(Image.open(out / e["mask"])) > 0 for e in manifest["inputs"]}
    return manifest, masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


@pytest.mark.parametrize("source", ["index", "direct"])
@pytest.mark.parametrize("extra", [[], ["--finetune"]], ids=["persam", "persam-f"])
def test_batch_equals_photo_by_photo(album, tmp_path, monkeypatch, source, extra):
    if extra:  # a PerSAM-F concept instead
        refs = ["--ref", str(tmp_path / "ref.jpg"), "--ref-mask", str(tmp_path / "ref_mask.png")]
        assert main(["personalize", *refs, "--finetune", "-o", album["concept"], *TINY]) == 0
    given = ["--index", album["index"]] if source == "index" else [str(album["photos"])]
    calls = _calls(monkeypatch)
    one, one_masks = _run(album, tmp_path / "one", *given, "--batch", "1", "--workers", "1")
    assert set(calls) == {1}
    calls.clear()
    grouped, grouped_masks = _run(album, tmp_path / "grouped", *given, "--batch", "3", "--workers", "1")
    assert sorted(calls) == [2] * 3 + [3] * 3  # groups of 3 and 2 photos, three decoder calls each
    assert [e["input"] for e in grouped["inputs"]] == [e["input"] for e in one["inputs"]]
    assert [e["status"] for e in grouped["inputs"]] == ["written"] * 5
    for name, mask in one_masks.items():
        assert mask.any() and _iou(grouped_masks[name], mask) >= 0.999
    for a, b in zip(grouped["inputs"], one["inputs"]):
        assert abs(a["scores"][0] - b["scores"][0]) <= 1e-4  # the manifest's scores have 6 decimals
        assert a["prompts"] == b["prompts"]


def test_batch_below_one_refused(album, tmp_path, capsys):
    out = str(tmp_path / "z")
    assert main(["segment", "--concept", album["concept"], str(album["photos"]), "-o", out, "--batch", "0", *TINY]) != 0
    assert "--batch" in capsys.readouterr().err
