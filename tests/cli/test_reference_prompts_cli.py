"""Reference prompts on the commands: --ref-point / --ref-box instead of --ref-mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from persam.cli.main import main

BOX = "60,40,170,150"


@pytest.fixture
def photos(tmp_path):
    Image.fromarray(synthetic_photo(seed=5)[0]).save(tmp_path / "ref.png")
    targets = tmp_path / "targets"
    targets.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(seed=40 + i, center=(0.5, 0.4 + 0.1 * i))[0]).save(targets / f"t{i}.png")
    return tmp_path


def _model(tiny_checkpoint) -> list[str]:
    return ["--model", "sam_tiny", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]


def _masks(folder) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("t*.png"))}


@pytest.mark.parametrize("prompt", [["--box", BOX], ["--point", "108,81", "--negative-point", "20,20"]])
def test_segment_from_ref_prompts_equals_segment_from_persam_mask(photos, tiny_checkpoint, prompt):
    """`segment --ref-box B` == `segment --ref-mask m.png` with m.png from `persam mask --box B`."""
    ref, mask_png = photos / "ref.png", photos / "m.png"
    assert main(["mask", str(ref), *prompt, "-o", str(mask_png), *_model(tiny_checkpoint)]) == 0
    assert np.asarray(Image.open(mask_png)).any()
    from_mask, from_prompt = photos / "from_mask", photos / "from_prompt"
    assert (
        main(
            [
                "segment",
                str(photos / "targets"),
                "--ref",
                str(ref),
                "--ref-mask",
                str(mask_png),
                "-o",
                str(from_mask),
                *_model(tiny_checkpoint),
            ]
        )
        == 0
    )
    ref_prompt = [("--ref-" + a[2:]) if a.startswith("--") else a for a in prompt]
    assert (
        main(
            [
                "segment",
                str(photos / "targets"),
                "--ref",
                str(ref),
                *ref_prompt,
                "-o",
                str(from_prompt),
                *_model(tiny_checkpoint),
            ]
        )
        == 0
    )
    a, b = _masks(from_mask), _masks(from_prompt)
    assert list(a) == ["t0.png", "t1.png"] and list(b) == list(a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    manifest = json.loads((from_prompt / "manifest.json").read_text())
    assert manifest["method"] == "persam"
    # the prompts are part of the run's settings: the same run again finds its photos done
    assert (
        main(
            [
                "segment",
                str(photos / "targets"),
                "--ref",
                str(ref),
                *ref_prompt,
                "-o",
                str(from_prompt),
                *_model(tiny_checkpoint),
            ]
        )
        == 0
    )
    assert json.loads((from_prompt / "manifest.json").read_text())["spec_key"] == manifest["spec_key"]


def test_personalize_from_a_box_equals_personalize_from_its_mask(photos, tiny_checkpoint):
    from persam.session.concept_file import read_concept_metadata

    ref, mask_png = photos / "ref.png", photos / "m.png"
    assert main(["mask", str(ref), "--box", BOX, "-o", str(mask_png), *_model(tiny_checkpoint)]) == 0
    assert (
        main(
            [
                "personalize",
                "--ref",
                str(ref),
                "--ref-mask",
                str(mask_png),
                "--finetune",
                "-o",
                str(photos / "a.persam"),
                *_model(tiny_checkpoint),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "personalize",
                "--ref",
                str(ref),
                "--ref-box",
                BOX,
                "--finetune",
                "-o",
                str(photos / "b.persam"),
                *_model(tiny_checkpoint),
            ]
        )
        == 0
    )
    meta_a, tensors_a = read_concept_metadata(photos / "a.persam")
    meta_b, tensors_b = read_concept_metadata(photos / "b.persam")
    assert meta_a["tensors_sha256"] == meta_b["tensors_sha256"] and meta_b["method"] == "persam-f"


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--ref-box", "0,0,999,50"], "outside the 240x180 photo"),
        (["--ref-box", "1,2,3"], "malformed"),
        (["--ref-point", "300,10"], "outside"),
        (["--ref-box", BOX, "--ref-mask", "m.png"], "not both"),
        (["--ref-negative-point", "5,5"], "mark no object"),
        (["--ref-box", BOX, "--label", "1"], "--label"),
        (["--ref-box", BOX, "--ref", "{photos}/ref.png"], "--ref: prompts mark the object in one reference photo"),
    ],
)
def test_bad_reference_prompts_exit_2_before_loading(photos, capsys, extra, expect):
    extra = [e.format(photos=photos) for e in extra]
    # a missing checkpoint would be the error if the model loaded first
    code = main(
        [
            "segment",
            str(photos / "targets"),
            "--ref",
            str(photos / "ref.png"),
            *extra,
            "-o",
            str(photos / "out"),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(photos / "missing.pth"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expect in err, err
    assert not (photos / "out").exists()


def test_ref_prompts_with_a_concept_are_refused(photos, capsys):
    code = main(
        [
            "segment",
            str(photos / "targets"),
            "--concept",
            str(photos / "c.persam"),
            "--ref-box",
            BOX,
            "-o",
            str(photos / "out"),
            "--model",
            "sam_tiny",
            "--random-weights",
        ]
    )
    assert code == 2 and "--ref-box" in capsys.readouterr().err


def test_dreambooth_prepare_from_a_box(photos, tiny_checkpoint):
    out = photos / "data"
    code = main(
        [
            "dreambooth",
            "prepare",
            str(photos / "targets"),
            "--ref",
            str(photos / "ref.png"),
            "--ref-box",
            BOX,
            "--force",
            "-o",
            str(out),
            *_model(tiny_checkpoint),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    code = main(
        [
            "dreambooth",
            "prepare",
            str(photos / "targets"),
            "--ref",
            str(photos / "ref.png"),
            "-o",
            str(out),
            *_model(tiny_checkpoint),
        ]
    )
    assert code == 2
