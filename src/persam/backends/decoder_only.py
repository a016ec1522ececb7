"""A SAM 1 family backend whose image encoder exists only as a cached runtime conversion, or not at all.

When ``create_backend(..., runtime="openvino"|"onnxruntime")`` finds a complete cached conversion of
the checkpoint's encoder (``persam.backends.runtime.cached_runtime_encoder``, keyed by the file's
SHA-256), the PyTorch image encoder is neither built nor imported (MobileSAM's TinyViT and its timm
import, SAM's ViT): the prompt encoder and mask decoder are built alone
(``persam.backends.builders.build_decoder``) and loaded strictly from the checkpoint's
``prompt_encoder.*`` and ``mask_decoder.*`` keys. The encoder's own keys were checked when that
conversion was made from the same file (same SHA-256). Results are those of the whole model through
the same runtime: the decoder modules are the same classes with the same sizes and weights.

A run that encodes no photo (an album index segmented with a saved concept) builds the same backend with
no encoder at all (``create_backend(..., image_encoder=False)``): its masks are those of the whole model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from persam.backends.base import Backend
from persam.backends.models import ModelEntry
from persam.backends.runtime import RuntimeEncoder

_PARTS = ("prompt_encoder.", "mask_decoder.")


class RuntimeOnlyEncoder(nn.Module):
    """Stands for an image encoder that runs only through an inference runtime (no PyTorch module), or
    (``runtime`` None) for one that was not built because the run encodes no photo.

    ``Backend.encode`` calls ``runtime_encoder`` instead; calling this module is a bug.
    """

    def __init__(self, runtime: str | None) -> None:
        super().__init__()
        self.runtime = runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runtime is None:
            raise RuntimeError("this backend was built without its image encoder (a run that encodes no photo)")
        raise RuntimeError(f"this backend's image encoder runs through {self.runtime} only; it has no PyTorch module")


def load_decoder(entry: ModelEntry, path: Path, device: torch.device) -> nn.Module:
    """``entry``'s prompt encoder and mask decoder (one module holding both, in eval mode on ``device``),
    loaded strictly from the checkpoint's ``prompt_encoder.*`` and ``mask_decoder.*`` keys.

    Raises:
        CheckpointError: those keys do not fit.
    """
    from persam.backends.builders import build_decoder
    from persam.backends.checkpoints import CheckpointError, load_state_dict
    from persam.backends.families import mismatch_message

    prompt_encoder, mask_decoder = build_decoder(entry.name)
    parts = nn.Module()
    parts.prompt_encoder, parts.mask_decoder = prompt_encoder, mask_decoder
    state = load_state_dict(path)
    decoder_state = {k: v for k, v in state.items() if k.startswith(_PARTS)}
    try:
        parts.load_state_dict(decoder_state, strict=True)
    except RuntimeError:
        raise CheckpointError(f"{path}: {mismatch_message(entry.name, state, parts.state_dict())}") from None
    return parts.eval().requires_grad_(False).to(device)


def decoder_only_backend(
    entry: ModelEntry,
    parts: nn.Module,
    sha256: str,
    encoder: RuntimeEncoder | None,
    device: torch.device,
    precision: str,
    runtime: str,
) -> Backend:
    """The backend of ``entry`` with ``encoder`` as its image encoder (None: no encoder at all) and the
    decoder ``parts`` of :func:`load_decoder`."""
    return Backend(
        name=entry.name,
        image_encoder=RuntimeOnlyEncoder(runtime if encoder is not None else None),
        prompt_encoder=parts.prompt_encoder,
        mask_decoder=parts.mask_decoder,
        preprocessing=entry.preprocessing,
        device=device,
        precision=precision,
        checkpoint_sha256=sha256,
        runtime=runtime,
        runtime_encoder=encoder,
    )
