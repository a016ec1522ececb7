"""One Ctrl-C behaviour for every batch (``persam segment``, ``persam video``, the SAM 2 tracker): the first
Ctrl-C lets the photos (or the frame) being segmented finish and starts no other; the second interrupts at
once, and nothing more is written (a photo being computed in a worker thread runs to its end but is not
written). Either way what finished is recorded, and the command exits with status 130."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Stopped(Exception):
    """An item not started because of Ctrl-C."""


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event, now: threading.Event | None = None) -> Iterator[threading.Event]:
    """Meanwhile, a first Ctrl-C (SIGINT) only sets ``stop``; a second sets ``now`` (when given) and raises
    ``KeyboardInterrupt``.

    Signals reach the main thread only: elsewhere (a server's worker thread) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_sigint(signum, frame) -> None:
        if stop.is_set():
            if now is not None:
                now.set()
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
