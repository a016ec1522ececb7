"""Cold start of one ``persam segment``: wall time and what each imported package costs.

Runs ``python -X importtime -m persam segment --ref R --ref-mask M PHOTO -o OUT [OPTIONS]`` as fresh
processes, RUNS times for each source tree given, interleaved (tree A, tree B, tree A, ...), and prints
for each tree the median wall time, the median total import time and the median import time per
top-level package (see ``package_times``: a package's figure includes what it imports first).
With ``--json FILE`` the figures, the command and the machine's description are written there too.

    python benchmarks/cold_start.py --ref R --ref-mask M --photo P [--runs 5] [--src LABEL=SRC ...]
        [--warmup 1] [--json FILE] [-- PERSAM SEGMENT OPTIONS]

``--src`` defaults to this checkout's ``src``; the options after ``--`` default to
``--model sam_tiny --random-weights --device cpu``. ``--warmup`` runs (not timed) fill each tree's
cache first (``PERSAM_HOME`` is a temporary folder of each tree's own), e.g. the converted encoder of
``--runtime openvino --checkpoint FILE``. A benchmark, not a test: the figures depend on the machine
and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

DEFAULT_OPTIONS = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]


def package_times(stderr: str) -> dict[str, float]:
    """Seconds of import time by top-level package, from ``-X importtime`` lines.

    A package's figure is the cumulative time of its outermost imports (those not made from inside
    the same package), so it includes what it imports that was not imported before: torchvision's
    includes the ``torch._dynamo`` it pulls in. ``"total"`` is the sum of the "self" times of all lines.
    """
    rows = []  # (self us, cumulative us, depth, package), children before parents as importtime prints them
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((int(self_us), int(cumulative_us), depth, name.strip().split(".")[0]))
    # parents follow their children: walk backwards keeping the chain of open ancestors by depth
    totals: dict[str, float] = defaultdict(float)
    chain: list[str] = []
    for _self_us, cumulative_us, depth, package in reversed(rows):
        del chain[depth:]
        if package not in chain:
            totals[package] += cumulative_us / 1e6
        chain.append(package)
    totals["total"] = sum(r[0] for r in rows) / 1e6
    return dict(totals)


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
        raise SystemExit(f"the command failed (exit {done.returncode}): {' '.join(command)}\n{tail[-2000:]}")
    return wall, package_times(done.stderr)


def machine() -> dict[str, object]:
    """CPU model and cores, Python and torch versions, date."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # noqa: BLE001 - only a description
        torch_version = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch_version,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True)
    parser.add_argument("--ref-mask", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each tree first (default 1)")
    parser.add_argument("--src", action="append", default=[], metavar="LABEL=SRC", help="a source tree to time")
    parser.add_argument("--top", type=int, default=12, help="packages to print (default 12)")
    parser.add_argument("--json", type=Path, default=None)
    args, extra = parser.parse_known_args()
    options = [a for a in extra if a != "--"] or DEFAULT_OPTIONS
    here = Path(__file__).resolve().parents[1] / "src"
    trees = dict(item.split("=", 1) for item in args.src) or {"this checkout": str(here)}
    walls: dict[str, list[float]] = {label: [] for label in trees}
    imports: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory(prefix="persam-cold-") as tmp:
        envs = {}
        for i, (label, src) in enumerate(trees.items()):
            home = Path(tmp) / f"home{i}"
            envs[label] = {**os.environ, "PYTHONPATH": src, "PERSAM_HOME": str(home)}

        def command(out: Path) -> list[str]:
            base = [sys.executable, "-X", "importtime", "-m", "persam", "segment", "--ref", args.ref]
            return [*base, "--ref-mask", args.ref_mask, args.photo, "-o", str(out), *options]

        runs = 0
        for _ in range(args.warmup):
            for label in trees:
                runs += 1
                run_once(command(Path(tmp) / f"out{runs}"), envs[label])
        for _ in range(args.runs):
            for label in trees:
                runs += 1
                wall, packages = run_once(command(Path(tmp) / f"out{runs}"), envs[label])
                walls[label].append(wall)
                imports[label].append(packages)
    shown = sorted(
        {p for runs_ in imports.values() for r in runs_ for p in r} - {"total"},
        key=lambda p: -max(statistics.median(r.get(p, 0.0) for r in runs_) for runs_ in imports.values()),
    )[: args.top]
    result = {"command": "persam segment --ref R --ref-mask M PHOTO -o OUT " + " ".join(options), "trees": {}}
    print(f"{result['command']}: median of {args.runs} interleaved runs, seconds")
    print(f"{'':<22}" + "".join(f"{label:>16}" for label in trees))
    rows = {"wall": {label: statistics.median(walls[label]) for label in trees}}
    rows["imports, total"] = {label: statistics.median(r["total"] for r in imports[label]) for label in trees}
    for package in shown:
        rows[package] = {label: statistics.median(r.get(package, 0.0) for r in imports[label]) for label in trees}
    for name, values in rows.items():
        print(f"{name:<22}" + "".join(f"{values[label]:>16.3f}" for label in trees))
    for label in trees:
        result["trees"][label] = {
            "src": trees[label],
            "wall_s": walls[label],
            "median": {name: values[label] for name, values in rows.items()},
        }
    result["machine"] = machine()
    print(f"machine: {result['machine']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
