"""The image encoder through an inference runtime: OpenVINO or ONNX Runtime (CPU).

``attach_runtime(backend, "openvino")`` converts the backend's prepared fp32
PyTorch encoder once, caches the converted model, and makes
``Backend.encode`` run it instead of PyTorch. The prompt encoder and the mask
decoder stay in PyTorch. The runtime takes the same (1, 3, S, S) float32
row-major input as the PyTorch encoder and gives the same float32 row-major
outputs in the same order: the SAM 1 family's one (1, C, h, w) embedding,
SAM 2's three maps (``persam.backends.sam2_backend.Sam2ImageEncoder``).

Cache: one folder per converted encoder (OpenVINO: one for both precisions) under
``persam.backends.checkpoints.cache_dir() / "encoders"``, named from the model,
runtime, precision, input size and the checkpoint's SHA-256, holding the
runtime's files and a ``manifest.json`` written last with the full key
(checkpoint SHA-256, model, input size, precision, runtime and its version,
the conversion format) and the SHA-256 of every file. A folder is built under
a temporary name and renamed into place, so an interrupted conversion leaves
nothing that looks complete; on load the manifest and the files' hashes are
checked, and a stale or damaged folder is converted again (one line on
stderr). Random weights (no checkpoint file, so no SHA-256 to key on) are
converted into a temporary folder for this process only.

Precision: "fp32" is exact (float rounding only); "bf16" is OpenVINO's
``INFERENCE_PRECISION_HINT`` (matrix products in bf16). OpenVINO silently runs
fp32 where the CPU has no bf16 arithmetic (no AVX512-BF16 or AMX: "BF16" missing
from its ``OPTIMIZATION_CAPABILITIES``), so bf16 is refused there rather than
reported as bf16. ONNX Runtime runs fp32 only on CPUs. The runtimes run on the CPU only: ``attach_runtime`` refuses a
backend on another device.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from persam.backends.base import Backend
from persam.backends.encoder_cache import MANIFEST, encoders_dir, file_hashes, folder_name, read_manifest
from persam.backends.runtime_impls import RUNTIME_IMPLS, Runtime, RuntimeUnavailableError

__all__ = [
    "RUNTIMES",
    "RUNTIME_IMPLS",
    "RuntimeEncoder",
    "RuntimeUnavailableError",
    "attach_runtime",
    "cached_runtime_encoder",
    "has_cached_conversion",
    "load_runtime_encoder",
    "preflight",
]

#: The values of ``--runtime``; "torch" is persam's own PyTorch encoder.
RUNTIMES = ("torch", "openvino", "onnxruntime")
#: Bumped when the conversion changes, so older cached folders count as stale.
CONVERSION_FORMAT = 1


def notice(message: str) -> None:
    """One line on stderr (conversion progress, rebuilt caches)."""
    print(f"persam: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EncoderKey:
    """What a converted encoder depends on; two equal keys give the same converted model.

    Attributes:
        model: backend name ("vit_t", ...).
        weights_sha256: SHA-256 of the checkpoint file.
        input_size: side S of the (1, 3, S, S) encoder input.
        precision: "fp32" or "bf16"; "any" where the runtime's files do not
            depend on it (OpenVINO: the precision is a compile-time hint, one
            conversion serves both).
        runtime: "openvino" or "onnxruntime".
        runtime_version: the runtime package's version.
        torch_version: the PyTorch that traced the encoder.
        conversion_format: ``CONVERSION_FORMAT``.
    """

    model: str
    weights_sha256: str
    input_size: int
    precision: str
    runtime: str
    runtime_version: str
    torch_version: str = field(default_factory=lambda: str(torch.__version__))
    conversion_format: int = CONVERSION_FORMAT

    @property
    def folder_name(self) -> str:
        """Cache folder name: one per model, runtime, precision, size and checkpoint."""
        return folder_name(self.model, self.runtime, self.precision, self.input_size, self.weights_sha256)


@dataclass
class RuntimeEncoder:
    """A converted image encoder on the CPU: ``(1, 3, S, S) float32 ->`` what the PyTorch module returns.

    One output (the SAM 1 family): a (1, C, h, w) float32 tensor; several
    (SAM 2's ``Sam2ImageEncoder``): a tuple of float32 tensors in the module's order.

    Attributes:
        runtime: "openvino" or "onnxruntime".
        precision: "fp32" or "bf16".
        key: what the converted model was built from.
        folder: the cache folder it was loaded from (``None``: a temporary folder, random weights).
        converted: whether loading it needed a conversion.
        load_s: seconds spent converting (if any) and loading.
    """

    runtime: str
    precision: str
    key: EncoderKey
    folder: Path | None
    converted: bool
    load_s: float
    _run: Callable[[np.ndarray], list[np.ndarray]] = field(repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(1, 3, S, S) input (any float dtype, any layout, CPU) -> the output(s), float32 row-major."""
        return _outputs(self._run, x)

    def throughput(self) -> tuple[RuntimeEncoder, int] | None:
        """The runtime's throughput mode, if it has one (OpenVINO: ``PERFORMANCE_HINT: THROUGHPUT``): an
        encoder like this one, to be called from several threads at once, and how many photos it
        encodes at once; None where the runtime has none (ONNX Runtime)."""
        make = getattr(self._run, "throughput", None)
        if make is None:
            return None
        run, streams = make()
        return replace(self, _run=run), streams


def _outputs(run: Callable[[np.ndarray], list[np.ndarray]], x: torch.Tensor):
    array = x.detach().to("cpu", torch.float32).contiguous().numpy()
    outputs = tuple(torch.from_numpy(out) for out in run(array))
    return outputs[0] if len(outputs) == 1 else outputs


def _import_check(impl: Runtime) -> None:
    import importlib.util

    if importlib.util.find_spec(impl.package) is None:
        raise RuntimeUnavailableError(
            f"--runtime {impl.name} needs the {impl.label} package, which is not installed; "
            f"install it with: pip install 'persam[{impl.extra}]' (or use --runtime torch)"
        )


def preflight(runtime: str, precision: str) -> Runtime:
    """The runtime ``runtime`` if it is installed and can run ``precision`` on this machine.

    Cheap (no model is built): ``persam.backends.create_backend`` calls it
    before building the model and hashing its weights, so a refusal comes first.

    Raises:
        RuntimeUnavailableError: an unknown runtime, its package missing, or a precision it cannot run here.
    """
    if runtime not in RUNTIME_IMPLS:
        raise RuntimeUnavailableError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    impl = RUNTIME_IMPLS[runtime]
    if precision not in impl.precisions:
        raise RuntimeUnavailableError(
            f"--runtime {runtime} runs the encoder in {' or '.join(impl.precisions)} only on CPUs; "
            f"use --runtime openvino for --precision {precision}, or --runtime torch"
        )
    _import_check(impl)
    impl.check(precision)
    return impl


def _verify(folder: Path, key: EncoderKey) -> str | None:
    """``None`` if ``folder`` holds a complete conversion for ``key``, else why not (its files' hashes are
    those a warm start of it has just checked, if one did: ``persam.backends.warm``)."""
    from persam.backends.warm import verified_files

    manifest = read_manifest(folder)
    if manifest is None:
        return "its manifest is missing or unreadable"
    if manifest.get("key") != asdict(key):
        return "it was converted from other weights or by another runtime version"
    recorded = manifest.get("files")
    if recorded is not None and verified_files(folder) == recorded:
        return None
    try:
        if file_hashes(folder) != manifest.get("files"):
            return "its files do not match their recorded SHA-256"
    except OSError:
        return "its files cannot be read"
    return None


def _convert_into(impl: Runtime, encoder: nn.Module, key: EncoderKey, folder: Path) -> None:
    """Convert into ``folder`` (empty) and write the manifest last."""
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, 3, key.input_size, key.input_size, generator=generator)
    with torch.no_grad():
        impl.convert(encoder, example, folder)
    manifest = {"key": asdict(key), "files": file_hashes(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _build_cached(impl: Runtime, encoder: nn.Module, key: EncoderKey, target: Path) -> None:
    """Convert into a temporary sibling of ``target``, then rename it into place."""
    from persam.backends.warm import discard

    discard(target)  # a warm start of the old files is of no use
    target.parent.mkdir(parents=True, exist_ok=True)
    for left in target.parent.glob(f".{target.name}.*-*"):  # left by a killed conversion a day ago or more
        if time.time() - left.stat().st_mtime > 86400:
            shutil.rmtree(left, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _convert_into(impl, encoder, key, tmp)
        if target.exists():  # stale or damaged: move it aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if _verify(target, key) is not None:  # not a finished twin from another process
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _key(impl: Runtime, model: str, weights_sha256: str, input_size: int, precision: str) -> EncoderKey:
    in_files = precision if impl.precision_in_files else "any"
    return EncoderKey(model, weights_sha256, int(input_size), in_files, impl.name, impl.version())


def _folder(cache: Path | None, key: EncoderKey) -> Path:
    return (encoders_dir() if cache is None else Path(cache)) / key.folder_name


def has_cached_conversion(
    *, model: str, weights_sha256: str, input_size: int, precision: str, runtime: str, cache: Path | None = None
) -> bool:
    """Whether a conversion for these weights is in the cache (its folder exists; not yet verified:
    :func:`cached_runtime_encoder` checks its files). Arguments as :func:`cached_runtime_encoder`'s.

    Raises:
        RuntimeUnavailableError: unknown runtime, its package missing, or a precision it cannot run.
    """
    if runtime == "torch" or weights_sha256 == "random":
        return False
    key = _key(preflight(runtime, precision), model, weights_sha256, input_size, precision)
    return _folder(cache, key).exists()


def cached_runtime_encoder(
    *,
    model: str,
    weights_sha256: str,
    input_size: int,
    precision: str,
    runtime: str,
    threads: int | None = None,
    cache: Path | None = None,
) -> RuntimeEncoder | None:
    """The cached conversion for these weights if a complete, verified one is there, else None.

    Needs no PyTorch encoder module (nothing is converted): ``persam.backends.create_backend`` then
    builds the prompt encoder and mask decoder alone. Arguments as :func:`load_runtime_encoder`'s;
    ``weights_sha256`` "random" never has a cached conversion.

    Raises:
        RuntimeUnavailableError: unknown runtime, its package missing, or a precision it cannot run.
    """
    impl = preflight(runtime, precision)
    if weights_sha256 == "random":
        return None
    key = _key(impl, model, weights_sha256, input_size, precision)
    folder = _folder(cache, key)
    if not folder.exists() or _verify(folder, key) is not None:
        return None
    start = time.perf_counter()
    run = impl.load(folder, precision, int(threads or torch.get_num_threads()))
    return RuntimeEncoder(runtime, precision, key, folder, False, time.perf_counter() - start, run)


def load_runtime_encoder(
    encoder: nn.Module,
    *,
    model: str,
    weights_sha256: str,
    input_size: int,
    precision: str,
    runtime: str,
    threads: int | None = None,
    cache: Path | None = None,
) -> RuntimeEncoder:
    """The cached conversion of ``encoder`` for ``runtime``, converting it first if needed.

    Args:
        encoder: the prepared fp32 PyTorch image encoder, on the CPU, in eval mode; one
            (1, 3, S, S) input, one output tensor or a tuple of them (with several, an
            ``output_names`` attribute names them in the ONNX graph).
        model: backend name (part of the cache key).
        weights_sha256: the checkpoint's SHA-256; "random" converts into a temporary folder.
        input_size: side S of the encoder input.
        precision: "fp32" or "bf16".
        runtime: "openvino" or "onnxruntime".
        threads: CPU threads the runtime may use (default: ``torch.get_num_threads()``).
        cache: parent folder of the cached conversions (default: ``cache_dir() / "encoders"``).

    Raises:
        RuntimeUnavailableError: unknown runtime, its package missing, or a precision it cannot run.
    """
    impl = preflight(runtime, precision)
    key = _key(impl, model, weights_sha256, input_size, precision)
    threads = int(threads or torch.get_num_threads())
    start = time.perf_counter()
    what = f"the {model} image encoder for {impl.label} ({precision}, {input_size}x{input_size} input)"
    if weights_sha256 == "random":
        with tempfile.TemporaryDirectory(prefix="persam-encoder-", ignore_cleanup_errors=True) as tmp:
            _convert_into(impl, encoder, key, Path(tmp))
            run = impl.load(Path(tmp), precision, threads)
        return RuntimeEncoder(runtime, precision, key, None, True, time.perf_counter() - start, run)
    folder = _folder(cache, key)
    problem = _verify(folder, key) if folder.exists() else "absent"
    if problem is not None:
        if problem != "absent":
            notice(f"the cached encoder {folder} is stale or damaged ({problem}); converting it again")
        notice(f"converting {what}; this happens once per checkpoint ...")
        _build_cached(impl, encoder, key, folder)
        run = impl.load(folder, precision, threads)
        seconds = time.perf_counter() - start
        notice(f"converted {what} in {seconds:.1f} s; cached in {folder}")
        return RuntimeEncoder(runtime, precision, key, folder, True, seconds, run)
    return RuntimeEncoder(
        runtime, precision, key, folder, False, time.perf_counter() - start, impl.load(folder, precision, threads)
    )


def attach_runtime(backend: Backend, runtime: str, *, cache: Path | None = None) -> Backend:
    """Make ``backend.encode`` run its image encoder through ``runtime`` ("torch": unchanged).

    The backend's PyTorch encoder must be prepared in fp32 (it is what gets
    converted); ``backend.precision`` says which precision the runtime runs.

    Raises:
        RuntimeUnavailableError: an unknown runtime, a missing package, a
            precision the runtime cannot run, or a backend not on the CPU.
    """
    if runtime == "torch":
        backend.runtime, backend.runtime_encoder = "torch", None
        return backend
    if runtime not in RUNTIME_IMPLS:
        raise RuntimeUnavailableError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if backend.device.type != "cpu":
        raise RuntimeUnavailableError(
            f"--runtime {runtime} runs the image encoder on the CPU only; use --device cpu, "
            f"or --runtime torch on {backend.device.type}"
        )
    backend.runtime_encoder = load_runtime_encoder(
        backend.image_encoder,
        model=backend.name,
        weights_sha256=backend.checkpoint_sha256,
        input_size=backend.preprocessing.input_size,
        precision=backend.precision,
        runtime=runtime,
        cache=cache,
    )
    backend.runtime = runtime
    return backend
