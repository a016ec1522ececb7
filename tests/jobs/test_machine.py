"""The machine description that benchmark results files carry (``persam.jobs.machine``)."""

from __future__ import annotations

import json
from pathlib import Path

from persam.jobs.machine import cpu_description, describe_machine, write_results

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse2 sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile ht
processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu sse2 sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile ht
"""


def test_cpu_model_and_arithmetic_flags_from_cpuinfo() -> None:
    model, flags = cpu_description(CPUINFO)
    assert model == "Example CPU 9000"
    assert flags == ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512f", "fma", "sse4_2"]  # no fpu, sse2, ht


def test_arm_features_line_is_read() -> None:
    model, flags = cpu_description("Hardware\t: Example SoC\nFeatures\t: fp asimd sve crc32\n")
    assert model == "Example SoC" and flags == ["asimd", "sve"]


def test_results_file_has_command_machine_and_figures(tmp_path: Path) -> None:
    import torch

    path = write_results(tmp_path / "r" / "x.json", "persam bench --runs 1", {"encoder_s": 0.25})
    data = json.loads(path.read_text())
    assert data["command"] == "persam bench --runs 1" and data["encoder_s"] == 0.25
    machine = data["machine"]
    assert machine["torch"] == torch.__version__ and machine["logical_cores"] >= 1
    assert machine["date"].endswith("Z") and len(machine["date"]) == 20
    assert set(describe_machine()) >= {"cpu", "cpu_flags", "logical_cores", "usable_cores", "python", "platform"}


def test_bench_json_names_the_command_that_repeats_it(tmp_path: Path) -> None:
    import shlex

    from persam.cli.main import build_parser, main

    report = tmp_path / "bench.json"
    argv = ["bench", "--random-weights", "--model", "sam_tiny", "--runs", "1", "--image-size", "256"]
    assert main([*argv, "--device", "cpu", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    words = shlex.split(data["command"])
    assert words[:2] == ["persam", "bench"]
    again, first = build_parser().parse_args(words[1:]), build_parser().parse_args([*argv, "--json", str(report)])
    assert vars(again) == {**vars(first), "device": "cpu"}
    assert data["machine"]["cpu"] and data["model"] == "sam_tiny"
