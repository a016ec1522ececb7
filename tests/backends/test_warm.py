"""The warm start (``persam.backends.warm``): the cached OpenVINO encoder compiled and the first photos encoded
before PyTorch is imported, handed over with the same embeddings the normal path computes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import persam
from conftest import synthetic_photo
from extras import needs
from persam.backends import warm
from persam.backends.base import Preprocessing
from persam.backends.builders import write_random_checkpoint
from persam.backends.models import find
from persam.backends.runtime import RUNTIME_IMPLS
from persam.cli.main import main


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return write_random_checkpoint("sam_tiny", tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3)


def photos(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(folder / f"p{i}.jpg")
        Image.fromarray(synthetic_photo(150 + 10 * i, 200, seed=20 + i)[0]).save(out[-1], quality=95)
    return out


@pytest.mark.parametrize("hw", [(150, 200), (300, 120), (64, 64), (1025, 700)])
def test_the_numpy_input_is_the_former_tensor_input_bit_for_bit(hw):
    """``Preprocessing.to_tensor`` (now ``persam.backends.pixels``) against the PyTorch arithmetic it replaced."""
    p = Preprocessing(input_size=256)
    image = np.random.default_rng(hw[0]).integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    resized = torch.from_numpy(np.ascontiguousarray(p.resize(image))).permute(2, 0, 1).float()
    mean, std = torch.tensor(p.pixel_mean).view(3, 1, 1), torch.tensor(p.pixel_std).view(3, 1, 1)
    h, w = resized.shape[-2:]
    former = torch.nn.functional.pad((resized - mean) / std, (0, 256 - w, 0, 256 - h)).unsqueeze(0)
    now = p.to_tensor(image, torch.device("cpu"))
    assert now.dtype == torch.float32 and now.shape == former.shape and torch.equal(now, former)


@pytest.mark.parametrize(
    "env", [{}, {"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "64"}, {"MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "64"}]
)
def test_default_threads_are_pytorchs(monkeypatch, env):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = "import torch; print(torch.get_num_threads())"
    torch_default = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert warm.default_threads() == torch_default


def test_the_warm_start_imports_no_torch():
    code = "import sys; import persam.backends.warm, persam.engine.warm_start; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@needs("openvino")
def test_a_warm_start_hands_over_the_embeddings_of_the_normal_path(tiny_ckpt, cache, conversions, tmp_path):
    files = photos(tmp_path / "photos")
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    cold = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")  # converts into the cache
    expected = [cold.backend.encode(image).embedding for image in images]
    assert not RUNTIME_IMPLS["openvino"].precision_in_files and warm.OPENVINO_FOLDER_PRECISION == "any"

    entry = find("sam_tiny")
    started = warm.start("sam_tiny", tiny_ckpt, "fp32", torch.get_num_threads(), files[:2], entry.input_size)
    started.thread.join()
    assert started.error is None and started.folder == cold.backend.runtime_encoder.folder  # the same cache folder
    assert len(started.encoded) == 2
    model = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    assert conversions["openvino"] == 1 and warm._STARTED == []  # handed over, nothing converted again
    run = model.backend.runtime_encoder._run
    got = [model.backend.encode(image).embedding for image in images]
    assert run.answered == 2  # the two warm photos answered from the warm start, the third encoded now
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert torch.equal(model.backend.encode(images[0]).embedding, expected[0])  # answered once, then encoded
    assert run.answered == 2


@needs("openvino")
def test_other_settings_or_damaged_files_leave_the_work_to_the_normal_path(tiny_ckpt, cache, tmp_path):
    files = photos(tmp_path / "photos", 1)
    persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    entry = find("sam_tiny")
    other = warm.start("sam_tiny", tiny_ckpt, "fp32", torch.get_num_threads() + 1, files, entry.input_size)
    model = persam.load("sam_tiny", tiny_ckpt, device="cpu", runtime="openvino")
    assert other.error is None and model.backend.runtime_encoder._run._encoded == []  # other threads: not taken
    folder = model.backend.runtime_encoder.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["encoder.bin"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    damaged = warm.start("sam_tiny", tiny_ckpt, "fp32", torch.get_num_threads(), files, entry.input_size)
    damaged.thread.join()
    assert damaged.compiled is None and damaged.error == "no complete cached conversion"
    warm.discard(folder)


@needs("openvino")
def test_a_cold_segment_with_a_warm_start_writes_the_masks_of_one_without(tiny_ckpt, cache, tmp_path, monkeypatch):
    files = photos(tmp_path / "photos")
    ref, mask = synthetic_photo(150, 200, seed=20)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    model = ["--model", "sam_tiny", "--checkpoint", str(tiny_ckpt), "--runtime", "openvino", "--device", "cpu"]
    args = ["--ref", str(files[0]), "--ref-mask", str(tmp_path / "mask.png"), *map(str, files[1:])]
    assert main(["segment", *args, "-o", str(tmp_path / "converted"), *model]) == 0  # converts, no warm start
    answered = []
    real = warm.take

    def counting(folder, config):
        found = real(folder, config)
        answered.append(None if found is None else len(found.encoded))
        return found

    monkeypatch.setattr(warm, "take", counting)
    assert main(["segment", *args, "-o", str(tmp_path / "warm"), *model]) == 0
    assert answered == [3]  # the reference and both targets encoded by the warm start
    monkeypatch.setattr(warm, "start", lambda *a, **k: dataclasses.replace(warm.Warm({}), thread=None))
    assert main(["segment", *args, "-o", str(tmp_path / "cold"), *model]) == 0
    for f in files[1:]:
        a, b = (np.array(Image.open(tmp_path / d / f"{f.stem}.png")) for d in ("warm", "cold"))
        assert a.any() and np.array_equal(a, b)


def test_start_returns_once_the_warm_starts_imports_are_done(tiny_ckpt, cache, monkeypatch):
    import threading
    import time

    release = threading.Event()
    reached = []

    def stuck(warm_start, *args):  # imports done, then the rest of its work takes long
        warm_start.imported.set()
        reached.append(time.perf_counter())
        release.wait(30)

    monkeypatch.setattr(warm, "_warm", stuck)
    monkeypatch.setattr(warm, "_STARTED", [])  # this test's warm starts only
    started = warm.start("sam_tiny", tiny_ckpt, "fp32", 1, [], 1024)
    assert reached and started.imported.is_set() and started.thread.is_alive()  # back before the work ends
    release.set()
    started.thread.join(30)


def test_start_does_not_wait_past_its_limit_for_a_stuck_import(tiny_ckpt, cache, monkeypatch):
    import threading
    import time

    release = threading.Event()
    monkeypatch.setattr(warm, "_warm", lambda *args: release.wait(30))
    monkeypatch.setattr(warm, "IMPORT_WAIT_S", 0.2)
    monkeypatch.setattr(warm, "_STARTED", [])
    t0 = time.perf_counter()
    started = warm.start("sam_tiny", tiny_ckpt, "fp32", 1, [], 1024)
    assert time.perf_counter() - t0 < 5 and not started.imported.is_set()
    release.set()
    started.thread.join(30)
    assert started.imported.is_set()  # set when the thread ends, whatever stopped it


def test_without_openvino_the_warm_start_stops_and_says_why(tiny_ckpt, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    monkeypatch.setattr(warm, "_STARTED", [])
    started = warm.start("sam_tiny", tiny_ckpt, "fp32", 1, [], 1024)
    started.thread.join(30)
    assert started.imported.is_set() and started.compiled is None and "openvino" in (started.error or "")
