"""The warm start: a cached OpenVINO image encoder compiled, and a run's first photos encoded, while the main
thread is still importing PyTorch (a single-threaded import of 1.5-2 s that leaves the other cores idle).

Nothing here imports PyTorch. ``start`` runs in a daemon thread: it checks the cached conversion's files
against their manifest (``persam.backends.encoder_cache``), compiles the model with the settings
``OpenVino.load`` uses (``openvino_config``), runs it once on each given photo (the encoder input made by
``persam.backends.pixels``, bit for bit ``Preprocessing.to_tensor``'s) and keeps (input, outputs). ``take``,
called by ``OpenVino.load`` for the same folder, waits for the thread and hands over the compiled model and
those pairs when the settings are the same; the encoder answers a call whose input equals a kept one with its
outputs (the same compiled model's, a moment earlier) instead of running again. A conversion into the folder
discards its warm start (``discard``). Whatever the warm start cannot do (no cached conversion, a photo it
cannot read, other settings) is left to the normal path, which reports it: the warm start only saves time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: OpenVINO's converted files serve every precision (a compile-time hint): its cache folders say "any"
#: (``OpenVino.precision_in_files`` is False; tests/backends/test_warm.py checks the two agree).
OPENVINO_FOLDER_PRECISION = "any"
#: Seconds ``start`` waits at most for the warm start's imports (OpenVINO's: about 0.15 s).
IMPORT_WAIT_S = 2.0
#: Photos a warm start encodes at most (each keeps its 12 MB input and 4 MB embedding until used).
MAX_PHOTOS = 3


def openvino_config(precision: str, threads: int) -> dict:
    """The OpenVINO compile settings of the encoder in latency mode (``OpenVino.load``'s)."""
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "INFERENCE_NUM_THREADS": int(threads)}


def infer_outputs(request, outputs: int) -> list[np.ndarray]:
    """An infer request's outputs after ``infer``, as float32 row-major copies."""
    return [np.array(request.get_output_tensor(i).data, dtype=np.float32, copy=True) for i in range(outputs)]


def default_threads() -> int:
    """The CPU threads PyTorch uses by default (``torch.get_num_threads()``), found without importing it:
    the machine's physical cores, or fewer when ``MKL_NUM_THREADS`` or else ``OMP_NUM_THREADS`` asks for
    fewer (a larger value is capped at the cores, as PyTorch does; tests compare with PyTorch)."""
    cores = _physical_cores()
    for name in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return min(int(value), cores)
    return cores


def _physical_cores() -> int:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return os.cpu_count() or 1
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or os.cpu_count() or 1


@dataclass
class Warm:
    """A warm start (see the module docstring); ``folder`` is known once its thread found it."""

    config: dict
    folder: Path | None = None
    thread: threading.Thread | None = None
    files: dict | None = None  # the manifest's file hashes, once the files were found to match them
    core: Any = None
    source: Any = None
    compiled: Any = None
    encoded: list[tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=list)
    error: str | None = None  # what stopped it, if anything (the normal path then does the work)
    imported: threading.Event = field(default_factory=threading.Event)  # its imports done (or it stopped)


_STARTED: list[Warm] = []
_LOCK = threading.Lock()


def _work(warm: Warm, model: str, checkpoint: Path, photos: Sequence, input_size: int) -> None:
    try:
        _warm(warm, model, checkpoint, photos, input_size)
    finally:
        warm.imported.set()


def _warm(warm: Warm, model: str, checkpoint: Path, photos: Sequence, input_size: int) -> None:
    try:
        import openvino as ov

        from persam.backends.checkpoints import checkpoint_sha256
        from persam.backends.encoder_cache import encoders_dir, file_hashes, folder_name, read_manifest
        from persam.backends.pixels import SAM_PIXEL_MEAN, SAM_PIXEL_STD, meanstd_input, resize_longest_side
        from persam.io import load_image

        warm.imported.set()
        name = folder_name(model, "openvino", OPENVINO_FOLDER_PRECISION, input_size, checkpoint_sha256(checkpoint))
        warm.folder = encoders_dir() / name
        manifest = read_manifest(warm.folder)
        if manifest is None or file_hashes(warm.folder) != manifest.get("files"):
            warm.error = "no complete cached conversion"
            return
        warm.files = manifest["files"]
        warm.core = ov.Core()
        warm.source = warm.core.read_model(str(warm.folder / "encoder.xml"))
        warm.compiled = warm.core.compile_model(warm.source, "CPU", warm.config)
        request = warm.compiled.create_infer_request()
        for photo in list(photos)[:MAX_PHOTOS]:
            try:
                image = load_image(photo)
            except Exception:  # noqa: BLE001 - the run reads it again and reports what is wrong with it
                continue
            x = meanstd_input(resize_longest_side(image, input_size), input_size, SAM_PIXEL_MEAN, SAM_PIXEL_STD)
            request.infer({0: x})
            warm.encoded.append((x, infer_outputs(request, len(warm.compiled.outputs))))
    except Exception as exc:  # noqa: BLE001 - the normal path loads and encodes again, and reports
        warm.error = f"{type(exc).__name__}: {exc}"
        warm.compiled = None


def start(
    model: str, checkpoint: str | os.PathLike, precision: str, threads: int, photos: Sequence, input_size: int
) -> Warm:
    """Start warming the cached OpenVINO conversion of ``model`` from the weights file ``checkpoint``
    (compiled with ``openvino_config(precision, threads)``) and encoding up to ``MAX_PHOTOS`` of ``photos``
    (paths; the SAM 1 family's input, longest side ``input_size``), in a daemon thread."""
    warm = Warm(openvino_config(precision, threads))
    warm.thread = threading.Thread(
        target=_work, args=(warm, model, Path(checkpoint), photos, input_size), name="persam-warm-start", daemon=True
    )
    with _LOCK:
        _STARTED.append(warm)
    warm.thread.start()
    # Imports run one at a time under Python's lock: the main thread's PyTorch import waits until
    # OpenVINO's is done, so that compiling and encoding start sooner (benchmarks/cold_start.py); the
    # import itself takes no longer in all (it would have shared that lock anyway).
    warm.imported.wait(IMPORT_WAIT_S)
    return warm


def _of(folder: Path, remove: bool) -> Warm | None:
    """The warm start of ``folder`` (waiting for the started ones), removed from the started ones if asked."""
    with _LOCK:
        started = list(_STARTED)
    for warm in started:
        if warm.thread is not None:
            warm.thread.join()
    with _LOCK:
        for warm in _STARTED:
            if warm.folder == Path(folder):
                if remove:
                    _STARTED.remove(warm)
                return warm
    return None


def take(folder: Path, config: dict) -> Warm | None:
    """The finished warm start of ``folder`` if it compiled with ``config``, else None; handed over once."""
    warm = _of(folder, remove=True)
    return warm if warm is not None and warm.compiled is not None and warm.config == config else None


def verified_files(folder: Path) -> dict | None:
    """The file hashes a warm start of ``folder`` found its files to match, or None."""
    warm = _of(folder, remove=False)
    return None if warm is None else warm.files


def discard(folder: Path) -> None:
    """Forget a warm start of ``folder`` (its files are about to be replaced)."""
    _of(folder, remove=True)
