"""Backends: frozen SAM-family models behind one small contract (tensors only).

The names below are imported on first use, so that ``persam.backends.checkpoints``
and the model table (``persam.backends.models``, read by ``persam.backends.registry``: the command
line's help, ``persam models``) do not import torch. A model is added by one entry in that table.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from persam.backends.base import Backend, EncodedImage, ImageGeometry, Preprocessing
    from persam.backends.models import ModelEntry
    from persam.backends.registry import (
        BackendSpec,
        bf16_supported,
        check_device_name,
        create_backend,
        get_spec,
        list_backends,
        offered_names,
    )

_LAZY = {
    "Backend": "persam.backends.base",
    "EncodedImage": "persam.backends.base",
    "ImageGeometry": "persam.backends.base",
    "Preprocessing": "persam.backends.base",
    "BackendSpec": "persam.backends.registry",
    "ModelEntry": "persam.backends.models",
    "bf16_supported": "persam.backends.registry",
    "check_device_name": "persam.backends.registry",
    "offered_names": "persam.backends.registry",
    "create_backend": "persam.backends.registry",
    "get_spec": "persam.backends.registry",
    "list_backends": "persam.backends.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'persam.backends' has no attribute {name!r}")
