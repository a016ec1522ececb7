"""Wall time of the command line's quick answers: ``python -m persam --help`` and ``persam models``.

Runs the two commands N times each, interleaved (help, models, help, models, ...), each in a fresh
Python process, and prints the median and the range of each. A benchmark, not a test: the figures
depend on the machine and its load.

    python benchmarks/cli_startup.py [--runs N] [--json FILE]

``--json FILE`` also writes the figures with the command and the machine (``persam.jobs.machine``),
as the results files under ``benchmarks/results/`` that the docs' performance page shows.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {"persam --help": ["--help"], "persam models": ["models"]}


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "persam", *argv], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="runs of each command (default 11)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    args = parser.parse_args()
    src = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PERSAM_HOME": home}
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.runs):
            for name, argv in COMMANDS.items():
                times[name].append(time_once(argv, env))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} interleaved runs each")
    for name, values in times.items():
        print(f"{name:<16} median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f})")
    if args.json:
        from persam.jobs.machine import write_results

        figures = {"runs": args.runs}
        for name, values in times.items():
            key = name.replace("persam ", "").replace("--", "").replace(" ", "_")
            figures.update({f"{key}_median_s": statistics.median(values), f"{key}_min_s": min(values)})
            figures[f"{key}_max_s"] = max(values)
        write_results(args.json, shlex.join(["python", "benchmarks/cli_startup.py", *sys.argv[1:]]), figures)


if __name__ == "__main__":
    main()
