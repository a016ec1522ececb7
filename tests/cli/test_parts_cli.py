"""``--prior part-aware`` / ``--parts`` on segment, personalize and eval perseg."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extras import require

require("sklearn")
require("ot")

from conftest import synthetic_photo  # noqa: E402
from persam.cli.main import main  # noqa: E402

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


def photo(path: Path, seed: int) -> Path:
    Image.fromarray(synthetic_photo(120, 160, seed=seed)[0]).save(path)
    return path


def test_segment_records_the_chosen_part_count(tmp_path, refs):
    target = photo(tmp_path / "t.png", 7)
    out = tmp_path / "out"
    assert main(["segment", *refs, "--prior", "part-aware", "--parts", "1..3", str(target), "-o", str(out), *TINY]) == 0
    entry = json.loads((out / "manifest.json").read_text())["inputs"][0]
    (parts,) = entry["parts"]
    assert parts["chosen"] in (1, 2, 3)
    assert [c["parts"] for c in parts["candidates"]] == [1, 2, 3]
    scored = [c["transport"] for c in parts["candidates"] if c["transport"] is not None]
    assert scored, parts["candidates"]  # at least one candidate's mask covers a cell: the choice is tested
    assert next(c["transport"] for c in parts["candidates"] if c["parts"] == parts["chosen"]) == min(scored)


def test_personalized_concept_segments_like_the_direct_run(tmp_path, refs):
    target = photo(tmp_path / "t.png", 8)
    concept = tmp_path / "c.persam"
    assert main(["personalize", *refs, "--prior", "part-aware", "--parts", "2..4", "-o", str(concept), *TINY]) == 0
    assert main(["segment", "--concept", str(concept), str(target), "-o", str(tmp_path / "a"), *TINY]) == 0
    assert (
        main(
            [
                "segment",
                *refs,
                "--prior",
                "part-aware",
                "--parts",
                "2..4",
                str(target),
                "-o",
                str(tmp_path / "b"),
                *TINY,
            ]
        )
        == 0
    )
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())["inputs"][0]
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())["inputs"][0]
    assert a["parts"][0]["chosen"] == b["parts"][0]["chosen"]
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "a" / "t.png")), np.array(Image.open(tmp_path / "b" / "t.png"))
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parts", "1..3"], "--parts: part counts apply to the part-aware prior only"),
        (["--prior", "part-aware", "--finetune"], "training-free"),
        (["--prior", "part-aware", "--max-instances", "2"], "similarity prior only"),
    ],
)
def test_prior_options_refused(tmp_path, refs, capsys, extra, message):
    target = photo(tmp_path / "t.png", 9)
    assert main(["segment", *refs, *extra, str(target), "-o", str(tmp_path / "o"), *TINY]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0..3", "4..2", "a..b"])
def test_bad_part_ranges_are_usage_errors(tmp_path, refs, capsys, text):
    assert (
        main(
            [
                "segment",
                *refs,
                "--prior",
                "part-aware",
                "--parts",
                text,
                str(tmp_path),
                "-o",
                str(tmp_path / "o"),
                *TINY,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "MIN..MAX" in err or "MIN <= MAX" in err


def test_prior_with_a_concept_is_refused(tmp_path, refs, capsys):
    concept = tmp_path / "c.persam"
    assert main(["personalize", *refs, "-o", str(concept), *TINY]) == 0
    target = photo(tmp_path / "t.png", 9)
    assert (
        main(
            [
                "segment",
                "--concept",
                str(concept),
                "--prior",
                "part-aware",
                str(target),
                "-o",
                str(tmp_path / "o"),
                *TINY,
            ]
        )
        == 2
    )
    assert "--prior" in capsys.readouterr().err


def test_bench_reports_the_part_aware_cost(tmp_path, capsys):
    report = tmp_path / "bench.json"
    argv = [
        "bench",
        "--model",
        "sam_tiny",
        "--random-weights",
        "--device",
        "cpu",
        "--runs",
        "1",
        "--image-size",
        "256",
        "--json",
        str(report),
    ]
    assert main(argv) == 0
    data = json.loads(report.read_text())
    assert data["parts_extra_s"] > 0 and 0 < data["parts_transport_share"] < 1
    assert data["parts_over_persam"] == pytest.approx(data["parts_extra_s"] / data["persam_extra_s"])
    printed = capsys.readouterr().out
    assert "part-aware prior beyond the encoder" in printed and "x PerSAM's" in printed
