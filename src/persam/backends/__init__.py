"""Backends: frozen SAM-family models behind one small contract (tensors only)."""

from persam.backends.base import Backend, EncodedImage, ImageGeometry, Preprocessing
from persam.backends.registry import BackendSpec, bf16_supported, create_backend, get_spec, list_backends

__all__ = [
    "Backend",
    "BackendSpec",
    "EncodedImage",
    "ImageGeometry",
    "Preprocessing",
    "bf16_supported",
    "create_backend",
    "get_spec",
    "list_backends",
]
