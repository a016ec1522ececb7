"""``persam app`` as a subprocess for a test: started on a free port, stopped in a ``finally``.

Its temporary folders (``TMPDIR``, where the app keeps its work, and
``GRADIO_TEMP_DIR``, where Gradio keeps uploads) are under the test's own
folder, so a test can look at everything the server wrote.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Served:
    """A running app.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        port: the port it was asked to listen on.
        proc: the server process (``python -m persam app ...``).
        root: the folder holding its temporary folders and its log (``server.log``).
    """

    url: str
    port: int
    proc: subprocess.Popen
    root: Path

    def log(self) -> str:
        """The server's output so far (stdout and stderr)."""
        return (self.root / "server.log").read_text(errors="replace")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(served: Served, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if served.proc.poll() is not None:
            raise AssertionError(f"persam app exited with {served.proc.returncode}: {served.log()[-2000:]}")
        try:
            with urllib.request.urlopen(served.url + "/config", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"persam app did not answer on {served.url} within {timeout:.0f} s: {served.log()[-2000:]}")


@contextmanager
def serve(
    root: Path, checkpoint: Path, *options: str, host: str | None = "127.0.0.1", timeout: float = 90.0
) -> Iterator[Served]:
    """Run ``persam app`` on the tiny model (``--host host`` unless ``host`` is None) until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("tmp", "gradio"):
        (root / name).mkdir(exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "persam", "app", "--port", str(port)]
    argv += ["--model", "sam_tiny", "--checkpoint", str(checkpoint), "--device", "cpu", *options]
    if host is not None:
        argv += ["--host", host]
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "TMPDIR": str(root / "tmp"),
    }
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    served = Served(url=f"http://127.0.0.1:{port}", port=port, proc=proc, root=root)
    try:
        _wait(served, timeout)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
