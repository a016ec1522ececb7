"""Freed memory kept for reuse: glibc's ``malloc`` tuned for the decoder's many short-lived tensors.

A PerSAM pass makes and frees a few dozen (N, C) = (4096, 256) float tensors (4 MiB each) on every
photo. glibc's ``malloc`` serves blocks of that size with ``mmap`` and hands them back with ``munmap``
when they are freed, or trims them off the heap's top, so the next one comes back as fresh pages that
the kernel faults in and zeroes one by one: page faults by the hundred thousand on an album's
``persam segment --index``, seen as system time. ``keep_freed_memory`` raises the two thresholds
(``mallopt``) so such blocks stay in the process and are reused: ``mmap`` only from ``MMAP_THRESHOLD``
up, and at most ``TRIM_THRESHOLD`` of free memory kept at the heap's top (what a long-running process,
such as the web app, may hold beyond what it uses).

Called once by each process that segments or encodes many photos (the ``persam`` script, Ray's
workers); elsewhere (musl, macOS, Windows) it does nothing. It changes where memory comes from, never
what is computed.
"""

from __future__ import annotations

import ctypes
import functools
import os

#: Blocks from this size up are still mapped on their own (glibc's largest allowed value on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: At most this much free memory is kept at the top of a heap (twice the threshold: glibc's own ratio).
TRIM_THRESHOLD = 64 << 20
# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's ``malloc`` once per process (see the module); returns whether it is tuned.

    False where the C library is not glibc or ``mallopt`` refused a value; the process then runs as
    before. Repeated calls return the first call's answer without calling ``mallopt`` again.
    """
    return _tune()


def _tune() -> bool:
    try:  # "glibc 2.36"; no such name (ValueError) or none (None) with another C library
        libc_name = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return False
    if not libc_name or not libc_name.startswith("glibc"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 when it refuses the value
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
