"""Fixtures of the Label Studio tests, imported by the test modules (not a conftest: the root `conftest`
module name is taken): a real server for the session (``ls_server``), the sample photos."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ls_server import SAMPLE_DIR, START_TIMEOUT, TOKEN, Server, free_port, label_studio_executable, stop, wait_for

from extras import require, require_path


@pytest.fixture(scope="session")
def cat_photos() -> tuple[list[Path], list[Path]]:
    """Three PerSeg sample photos of the cat and their masks."""
    images = require_path(SAMPLE_DIR / "Images" / "cat", "the PerSeg sample photos")
    photos = sorted(images.glob("*.jpg"))[:3]
    masks = [SAMPLE_DIR / "Annotations" / "cat" / f"{p.stem}.png" for p in photos]
    assert len(photos) == 3 and all(m.is_file() for m in masks)
    return photos, masks


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Server:
    """A Label Studio server on 127.0.0.1 for this session (data in a temporary folder)."""
    require("label_studio_sdk")
    executable = label_studio_executable()
    data = tmp_path_factory.mktemp("label-studio-data")
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
    }
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        env.pop(name, None)
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed in finally
    command = [executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    command += ["--username", "persam@example.com", "--password", "persam-test-pw", "--user-token", TOKEN]
    command += ["--enable-legacy-api-token"]
    proc = subprocess.Popen(command, env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(url + "/health", proc, START_TIMEOUT, "label-studio start")
        except AssertionError:
            log.flush()
            print((data / "server.log").read_text(errors="replace")[-3000:])
            raise
        yield Server(url, TOKEN)
    finally:
        stop(proc)
        log.close()
