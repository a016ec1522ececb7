"""The inference runtimes persam converts the image encoder for: OpenVINO and ONNX Runtime (CPU).

Each runtime says which precisions it runs, checks that this machine can run
one (OpenVINO's bf16 hint needs bf16 arithmetic: without AVX512-BF16 or AMX it
silently runs fp32, so bf16 is refused there), converts an fp32 PyTorch
module into a folder, and loads that folder as a function from the
(1, 3, S, S) float32 input to the module's outputs, in the module's order,
as float32 row-major arrays. Caching, keys and verification live in
``persam.backends.runtime``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from persam.errors import OptionsError


class RuntimeUnavailableError(OptionsError):
    """The runtime's package is not installed, or it cannot run what was asked (one line for the user)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="runtime")


class Runtime(Protocol):
    """What persam needs of an inference runtime (see the module docstring)."""

    name: str
    package: str
    extra: str
    label: str
    precisions: tuple[str, ...]
    #: Whether the converted files depend on the precision (OpenVINO's do not: it is a compile hint).
    precision_in_files: bool

    def version(self) -> str: ...

    def check(self, precision: str) -> None:
        """Raise ``RuntimeUnavailableError`` if this machine cannot run ``precision``."""

    def convert(self, encoder: nn.Module, example: torch.Tensor, folder: Path) -> None: ...

    def load(self, folder: Path, precision: str, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]: ...


#: The refusal of OpenVINO bf16 on a CPU without bf16 arithmetic.
NO_BF16 = (
    "--precision bf16 with --runtime openvino needs a CPU with bf16 arithmetic (AVX512-BF16 or AMX), "
    "and OpenVINO finds none on this one; use fp32 (no slower here), or --runtime torch --precision bf16"
)


class OpenVino:
    """OpenVINO: converted from a TorchScript trace; the precision is a compile-time hint (one conversion
    serves both)."""

    name, package, extra, label = "openvino", "openvino", "openvino", "OpenVINO"
    precisions = ("fp32", "bf16")
    precision_in_files = False

    def version(self) -> str:
        import openvino

        return str(openvino.__version__)

    def convert(self, encoder: nn.Module, example: torch.Tensor, folder: Path) -> None:
        import warnings

        import openvino as ov

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notices
            # Traced here, once, without the trace check: handing OpenVINO the module makes it trace and
            # check it again itself, which took as long as the rest of the conversion (the same graph).
            traced = torch.jit.trace(encoder, example, check_trace=False)
            model = ov.convert_model(traced, example_input=example)
        # compress_to_fp16=False: the saved weights stay fp32, so fp32 stays exact.
        ov.save_model(model, str(folder / "encoder.xml"), compress_to_fp16=False)

    def check(self, precision: str) -> None:
        """Refuse bf16 on a CPU without bf16 arithmetic (OpenVINO would run fp32 and call it bf16)."""
        import openvino as ov

        if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise RuntimeUnavailableError(NO_BF16)

    def load(self, folder: Path, precision: str, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
        import openvino as ov

        from persam.backends.warm import openvino_config, take

        hint = "bf16" if precision == "bf16" else "f32"
        config = openvino_config(precision, threads)
        warm = take(folder, config)  # compiled (and the first photos encoded) while PyTorch was imported
        if warm is not None:
            core, source, compiled, encoded = warm.core, warm.source, warm.compiled, warm.encoded
        else:
            core, encoded = ov.Core(), []
            source = core.read_model(str(folder / "encoder.xml"))  # kept: ``OpenVinoRun.throughput`` compiles it
            compiled = core.compile_model(source, "CPU", config)
        got = compiled.get_property("INFERENCE_PRECISION_HINT")
        if hint == "bf16" and got != ov.Type.bf16:
            raise RuntimeUnavailableError(NO_BF16)
        if hint == "f32" and got != ov.Type.f32:
            raise RuntimeUnavailableError(
                f"OpenVINO compiled the image encoder in {got} instead of f32 on this CPU; "
                "use --runtime torch (or --runtime onnxruntime)"
            )
        return OpenVinoRun(core, source, compiled, config, encoded)


class OpenVinoRun:
    """A compiled OpenVINO encoder: ``run(x)`` in latency mode (one stream with every thread: one photo
    at its fastest), and ``throughput()``, the same model compiled once more (on first use) with
    ``PERFORMANCE_HINT: THROUGHPUT``: several streams sharing the threads, one photo each, called from
    as many threads at once. Both give the same numbers (the same kernels in fp32; tested)."""

    def __init__(self, core, source, compiled, config: dict, encoded: list | None = None) -> None:
        self._core, self._source, self._config = core, source, config
        self._latency = _requests(compiled)
        #: (input, outputs) the warm start ran on this compiled model (``persam.backends.warm``), each
        #: answered once, to a call with an equal input
        self._encoded = list(encoded or [])
        self._encoded_lock = threading.Lock()
        self.answered = 0
        self._throughput: tuple[Callable[[np.ndarray], list[np.ndarray]], int] | None = None
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if not self._encoded:
            return self._latency(x)
        with self._encoded_lock:
            for i, (given, outputs) in enumerate(self._encoded):
                if given.shape == x.shape and np.array_equal(given, x):
                    del self._encoded[i]
                    self.answered += 1
                    return outputs
        return self._latency(x)

    def throughput(self) -> tuple[Callable[[np.ndarray], list[np.ndarray]], int]:
        """(run, photos at once): the throughput-mode encoder and its optimal number of infer requests."""
        with self._lock:
            if self._throughput is None:
                compiled = self._core.compile_model(
                    self._source, "CPU", {**self._config, "PERFORMANCE_HINT": "THROUGHPUT"}
                )
                streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
                self._throughput = (_requests(compiled), max(1, streams))
            return self._throughput


def _requests(compiled) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``x -> outputs`` on ``compiled``, one infer request per calling thread (a request runs one
    inference at a time)."""
    from persam.backends.warm import infer_outputs

    local = threading.local()
    outputs = len(compiled.outputs)

    def run(x: np.ndarray) -> list[np.ndarray]:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        request.infer({0: x})
        return infer_outputs(request, outputs)

    return run


class OnnxRuntime:
    """ONNX Runtime: exported by PyTorch's TorchScript ONNX exporter (opset 17); fp32 only on CPUs."""

    name, package, extra, label = "onnxruntime", "onnxruntime", "onnx", "ONNX Runtime"
    precisions = ("fp32",)
    precision_in_files = True

    def check(self, precision: str) -> None:
        """Nothing beyond ``precisions``: fp32 runs on every CPU."""

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def convert(self, encoder: nn.Module, example: torch.Tensor, folder: Path) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                encoder,
                (example,),
                str(folder / "encoder.onnx"),
                dynamo=False,
                opset_version=17,
                input_names=["image"],
                output_names=list(getattr(encoder, "output_names", ("embedding",))),
            )

    def load(self, folder: Path, precision: str, threads: int) -> Callable[[np.ndarray], list[np.ndarray]]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        # Errors only: Hiera's graph gives a harmless shape-merge warning on every load.
        options.log_severity_level = 3
        session = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> list[np.ndarray]:
            return [np.ascontiguousarray(out, dtype=np.float32) for out in session.run(None, {"image": x})]

        return run


#: The runtimes by ``--runtime`` name (tests may wrap ``convert`` to count conversions).
RUNTIME_IMPLS: dict[str, Runtime] = {impl.name: impl for impl in (OpenVino(), OnnxRuntime())}
