"""glibc's allocator told to keep freed memory: fresh 4 MiB blocks stop costing page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from persam.backends import allocator
from persam.cli import main as cli_main


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


# Run in a fresh process: the test process's allocator may already be tuned by another test.
PROBE = """
import resource, numpy as np
from persam.backends.allocator import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = np.ones((4096, 256), np.float32)  # 4 MiB, as the decoder's (N, C) cells
    for _ in range(50):
        y = x + 1
        z = y * 2
        del y, z
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

untuned = faults()
tuned = keep_freed_memory()
print(untuned, tuned, faults())
"""


@pytest.mark.skipif(not _glibc(), reason="the tuning is for glibc's malloc")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    untuned, tuned, after = out.split()
    assert tuned == "True"
    pages = 4096 * 256 * 4 // 4096  # one block's pages
    # untuned, about every one of the 100 fresh blocks is faulted in; tuned, a few blocks' worth
    assert int(untuned) > 20 * pages, out
    assert int(after) < 5 * pages, out


def test_called_once_per_process(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(allocator, "_tune", lambda: calls.append(1) or True)
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    finally:
        allocator.keep_freed_memory.cache_clear()  # a later call in this process tunes for real
    assert calls == [1]


def test_another_c_library_is_left_alone(monkeypatch) -> None:
    def no_glibc(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(allocator.os, "confstr", no_glibc)
    assert allocator._tune() is False
    monkeypatch.setattr(allocator.os, "confstr", lambda name: None)
    assert allocator._tune() is False


def test_the_script_tunes_before_the_command_runs(monkeypatch) -> None:
    order = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: order.append("tuned") or True)
    monkeypatch.setattr(cli_main, "main", lambda: order.append("main") or 0)
    monkeypatch.setattr(cli_main.gc, "freeze", lambda: None)
    assert cli_main.script() == 0
    assert order == ["tuned", "main"]
