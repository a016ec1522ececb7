"""Wall-clock timing of work that may run asynchronously on an accelerator.

CUDA and MPS kernels are queued and return before they finish, so a timer
must wait for the device before it starts and before it stops. Every
timed measurement in persam (``persam bench``, the video benchmark, the
scripts under ``benchmarks/``) goes through :func:`seconds` or
:func:`stopwatch`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until the queued work of ``device`` is done ("cuda[:i]", "mps"; "cpu" and None return at once)."""
    if device is None:
        return
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


@dataclass
class Lap:
    """The result of :func:`stopwatch`: ``seconds`` is set when the block ends."""

    seconds: float = float("nan")


@contextmanager
def stopwatch(device: torch.device | str | None = None) -> Iterator[Lap]:
    """Time a ``with`` block (``time.perf_counter``), the device synchronised at both ends.

    Example: ``with stopwatch(backend.device) as lap: backend.encode(x)``, then ``lap.seconds``.
    """
    lap = Lap()
    synchronize(device)
    start = time.perf_counter()
    yield lap
    synchronize(device)
    lap.seconds = time.perf_counter() - start


def seconds(fn: Callable[[], object], device: torch.device | str | None = None) -> float:
    """Wall time of one call of ``fn``, the device synchronised around it."""
    with stopwatch(device) as lap:
        fn()
    return lap.seconds


def median_seconds(
    fn: Callable[[], object], device: torch.device | str | None = None, *, runs: int = 5, warmup: int = 1
) -> float:
    """Median of ``runs`` timed calls of ``fn`` after ``warmup`` untimed ones.

    Raises:
        ValueError: ``runs`` < 1 or ``warmup`` < 0.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be at least 1 and warmup at least 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn, device) for _ in range(runs))
