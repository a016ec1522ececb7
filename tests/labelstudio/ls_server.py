"""Helpers of the Label Studio tests: starting a real server, and driving it through its API.

The server is the package index's ``label-studio`` (``persam[labelstudio-server]``; ``.ci/run`` installs
it), started once per session on 127.0.0.1 with its data in a temporary folder, a fixed legacy token, and
the loopback protection of ML backend URLs off (``ML_BLOCK_LOCAL_IP=false``,
``SSRF_PROTECTION_ENABLED=false``: a test's backend runs on 127.0.0.1); stopped at the end. It takes
about a minute to start. Missing: a skip, a failure under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from extras import IN_CI

TOKEN = "persam-test-token-0123456789"
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="cat"/><Label value="duck"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="cat"/></KeyPointLabels></View>'
)
#: the PerSeg sample photos (as tests/conftest.py finds them)
SAMPLE_DIR = Path(
    os.environ.get("PERSAM_SAMPLE_DIR", Path(__file__).resolve().parents[3] / "shared" / "data" / "perseg-sample")
)
#: seconds the server may take to answer /health
START_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_studio_executable() -> str:
    """``$PERSAM_LABEL_STUDIO``, the ``label-studio`` beside this Python, or on PATH."""
    found = os.environ.get("PERSAM_LABEL_STUDIO") or shutil.which("label-studio", path=str(Path(sys.executable).parent))
    found = found or shutil.which("label-studio")
    if not found:
        message = "the Label Studio server is not installed (pip install 'persam[labelstudio-server]')"
        if IN_CI:
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return found


def wait_for(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} did not answer {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@dataclass(frozen=True)
class Server:
    url: str
    token: str

    def call(self, method: str, path: str, body: object = None, timeout: float = 120) -> object:
        """A JSON request to the server's REST API."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Token {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def import_photos(self, project: int, photos: list[Path]) -> list[dict]:
        """Upload photos into a project (one multipart field per file); its tasks, in id order."""
        import httpx

        files = {f"file{i}": (p.name, p.read_bytes(), "image/jpeg") for i, p in enumerate(photos)}
        r = httpx.post(
            f"{self.url}/api/projects/{project}/import",
            headers={"Authorization": f"Token {self.token}"},
            files=files,
            timeout=120,
        )
        assert r.status_code == 201, r.text
        return self.tasks(project)

    def tasks(self, project: int) -> list[dict]:
        found = self.call("GET", f"/api/tasks/?project={project}&fields=all&page_size=100")
        return sorted(found["tasks"], key=lambda t: t["id"])

    def new_project(self, title: str, config: str = CONFIG) -> int:
        return self.call("POST", "/api/projects", {"title": title, "label_config": config})["id"]

    def annotate(self, task: int, mask: np.ndarray, label: str = "cat") -> int:
        """Submit a brush annotation of ``mask`` (H, W bool) on ``task``; its id."""
        from label_studio_sdk.converter.brush import mask2rle

        h, w = mask.shape
        region = {
            "type": "brushlabels",
            "from_name": "tag",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]},
        }
        return self.call("POST", f"/api/tasks/{task}/annotations", {"result": [region]})["id"]

    def annotate_box(
        self, task: int, box: tuple[int, int, int, int], shape: tuple[int, int], label: str = "cat"
    ) -> int:
        """Submit a rectangle annotation of the XYXY pixel ``box`` on a task whose photo is (H, W) ``shape``
        (Label Studio's percent coordinates, from the ``box`` control); its id."""
        h, w = shape
        x0, y0, x1, y1 = box
        value = {"x": 100 * x0 / w, "y": 100 * y0 / h, "width": 100 * (x1 - x0) / w, "height": 100 * (y1 - y0) / h}
        region = {
            "type": "rectanglelabels",
            "from_name": "box",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {**value, "rotation": 0, "rectanglelabels": [label]},
        }
        return self.call("POST", f"/api/tasks/{task}/annotations", {"result": [region]})["id"]

    def predictions(self, task: int) -> list[dict]:
        return self.call("GET", f"/api/predictions?task={task}")


def decode(prediction: dict) -> np.ndarray:
    """The union of a prediction's brush regions, (H, W) bool, decoded by the SDK."""
    from label_studio_sdk.converter.brush import decode_rle

    out = None
    for region in prediction["result"]:
        h, w = region["original_height"], region["original_width"]
        mask = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[..., 3] > 0
        out = mask if out is None else out | mask
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def http_error(exc: urllib.error.HTTPError) -> dict:
    return json.loads(exc.read() or b"{}")
