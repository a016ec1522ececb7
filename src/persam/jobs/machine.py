"""The machine a benchmark ran on, for the results files under ``benchmarks/results/``.

Every figure the docs' performance page shows comes from a results file that
carries this description and the command that made it.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

#: CPU flags that decide the speed of the encoder's arithmetic (vector widths, bf16/int8 units).
_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "vnni", "neon", "asimd", "sve")


def cpu_description(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and its arithmetic flags (AVX*, AMX*, FMA, ...), from ``/proc/cpuinfo``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; read from the system when None.

    Returns:
        (model name, sorted flags); ``platform.processor()`` and no flags where it cannot be read.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:  # not Linux: no flags to report, the platform's name only
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(f for f in value.split() if f.startswith(_ISA_PREFIXES))
    return model or platform.processor() or platform.machine(), sorted(flags)


def describe_machine(device: str | None = None) -> dict[str, object]:
    """What a result was measured on: CPU model and flags, cores, torch version, date (UTC).

    Args:
        device: the torch device the benchmark ran on; a CUDA device's name is added.

    Returns:
        A JSON-ready dict: ``cpu``, ``cpu_flags``, ``logical_cores``, ``usable_cores``,
        ``torch``, ``python``, ``platform``, ``date`` (ISO 8601, UTC) and, on CUDA, ``gpu``.
    """
    import torch

    model, flags = cpu_description()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out: dict[str, object] = {
        "cpu": model,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def write_results(path: str | os.PathLike, command: str, figures: dict[str, object], device: str | None = None) -> Path:
    """Write a benchmark's results file: ``{"command": ..., "machine": describe_machine(), **figures}``.

    Args:
        path: the JSON file to write (atomically; its folder is created).
        command: the command line that repeats the run.
        figures: the measured figures (JSON-ready, finite numbers).
        device: the torch device the benchmark ran on, if any.

    Returns:
        The path written.
    """
    from persam.io.atomic import atomic_write_json

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, {"command": command, "machine": describe_machine(device), **figures})
    return target
