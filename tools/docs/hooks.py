"""MkDocs hooks: the pages generated from the code and the committed results.

- ``reference/cli.md``: every ``persam`` command's ``--help``, from the argparse parsers
  (``persam.cli.main.build_parser``), so the reference cannot drift from the code.
- ``performance.md``: one table per results file under ``benchmarks/results/`` (written by
  ``persam bench --json``), with the command that produced it and the machine it ran on. A
  figure without a results file does not appear.

Both are added as generated files in ``on_files``; nothing is written into ``docs/``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
HELP_WIDTH = "100"

#: ``persam bench`` stages: (result key, label, the ratio key shown beside it or None).
BENCH_ROWS = (
    ("encoder_s", "image encoder", None),
    ("decoder_pass_s", "one multi-mask decoder pass", None),
    ("official_decoder_pass_s", "the same pass through the official modules", None),
    ("persam_extra_s", "PerSAM on an encoded photo", "persam_extra_over_decoder"),
    ("persam_f_extra_s", "PerSAM-F on an encoded photo", "persam_f_extra_over_decoder"),
    ("decode_only_s", "PerSAM, cached embedding (decode only)", "decode_only_over_decoder"),
    ("parts_extra_s", "part-aware prior, parts 1..5, encoded photo", None),
    ("fit_s", "PerSAM-F fit on an encoded reference", None),
    ("video_extra_s", "video frame beyond the encoder, 3 objects", None),
)


def on_files(files, config):
    """Add the generated pages to the site."""
    for uri, content in (("reference/cli.md", cli_reference()), ("performance.md", performance_page())):
        files.append(File.generated(config, uri, content=content))
    return files


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(actions[0].choices.items()) if actions else []


def cli_reference() -> str:
    """Markdown of every command's help, generated from the parsers."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps to the terminal's width: one width for the page
    try:
        from persam.cli.main import build_parser

        parser = build_parser()
        out = [
            "# Command line",
            "",
            "Generated from the argparse parsers of `persam` when the site is built (`tools/docs/hooks.py`);",
            "`persam COMMAND --help` prints the same text.",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
            "",
        ]
        todo = [(f"persam {name}", sub) for name, sub in _subcommands(parser)]
        while todo:
            title, sub = todo.pop(0)
            out += [f"## {title}", "", "```text", sub.format_help().rstrip(), "```", ""]
            todo[0:0] = [(f"{title} {name}", nested) for name, nested in _subcommands(sub)]
        return "\n".join(out)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def _machine_line(machine: dict) -> str:
    flags = ", ".join(machine.get("cpu_flags") or []) or "none reported"
    gpu = f"; GPU {machine['gpu']}" if machine.get("gpu") else ""
    return (
        f"{machine.get('cpu', '?')} ({machine.get('usable_cores', '?')} usable of "
        f"{machine.get('logical_cores', '?')} logical cores; flags: {flags}){gpu}; torch {machine.get('torch', '?')}, "
        f"Python {machine.get('python', '?')}; {machine.get('date', '?')}"
    )


def _bench_table(data: dict) -> list[str]:
    rows = ["| stage | ms | x one decoder pass |", "|---|---|---|"]
    pass_s = data.get("decoder_pass_s") or 0
    for key, label, ratio_key in BENCH_ROWS:
        if not isinstance(data.get(key), (int, float)):
            continue
        if ratio_key and isinstance(data.get(ratio_key), (int, float)):
            ratio = f"{data[ratio_key]:.2f}"
        elif key != "encoder_s" and pass_s and key.endswith("_s") and key not in ("fit_s", "video_extra_s"):
            ratio = f"{data[key] / pass_s:.2f}"
        else:
            ratio = ""
        rows.append(f"| {label} | {data[key] * 1000:.1f} | {ratio} |")
    for key, label, scale, unit in (
        ("video_extra_over_encoder", "video frame beyond the encoder / the encoder", 1, " x"),
        ("parts_transport_share", "share of optimal transport in the part-aware prior", 100, " %"),
        ("encoder_gflop", "encoder arithmetic", 1, " GFLOP"),
        ("video_gflop", "video frame arithmetic beyond the encoder", 1, " GFLOP"),
        ("peak_rss_mb", "peak resident memory", 1, " MiB"),
    ):
        if isinstance(data.get(key), (int, float)):
            rows.append(f"| {label} | {data[key] * scale:.2f}{unit} | |")
    return rows


def _generic_table(data: dict) -> list[str]:
    rows = ["| figure | value |", "|---|---|"]
    for key, value in data.items():
        if key in ("command", "machine"):
            continue
        if isinstance(value, float):
            rows.append(f"| `{key}` | {value:.4g} |")
        elif isinstance(value, (int, str, bool)):
            rows.append(f"| `{key}` | {value} |")
        else:
            rows.append(f"| `{key}` | `{json.dumps(value)[:200]}` |")
    return rows


def performance_page() -> str:
    """Markdown of every committed results file: its command, its machine, its figures."""
    out = [
        "# Performance",
        "",
        "Generated when the site is built (`tools/docs/hooks.py`) from the results files committed under",
        "`benchmarks/results/`, each written by the command shown above its table. Re-run a command with",
        "`--json` to measure your own machine. Random weights (`--random-weights`) do the same arithmetic as",
        "trained ones, so they time the models without a download; their masks mean nothing.",
        "`persam bench` times its stages in interleaved rounds after a warm-up and keeps medians.",
        "",
    ]
    files = sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []
    if not files:
        out.append("No results files are committed yet.")
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "command" not in data or "machine" not in data:
            continue  # a figure must name its command and machine, or it does not appear
        out += [
            f"## {path.stem}",
            "",
            f"File `benchmarks/results/{path.name}`, made by:",
            "",
            "```text",
            data["command"],
            "```",
            "",
            f"Machine: {_machine_line(data['machine'])}.",
            "",
        ]
        if "image_hw" in data and "model" in data:
            weights = "random weights" if data.get("random_weights") else "trained weights"
            h, w = data["image_hw"]
            out += [
                f"`{data['model']}` ({weights}), {w}x{h} photos, {data.get('precision')} on {data.get('device')}, "
                f"{data.get('threads')} threads, medians of {data.get('runs')} runs.",
                "",
            ]
        out += _bench_table(data) if "encoder_s" in data and "decoder_pass_s" in data else _generic_table(data)
        out.append("")
    return "\n".join(out)
