"""Encoding many photos at throughput: the runtime's throughput mode, photos read while others encode.

``encode_in_order`` reads and encodes photos ``streams`` at a time in threads and yields them in input
order. With an inference runtime that has a throughput mode (OpenVINO: ``PERFORMANCE_HINT: THROUGHPUT``,
``persam.backends.runtime.RuntimeEncoder.throughput``) the streams are the runtime's own (its optimal
number of infer requests, each stream a share of the threads) and the next photos are read and decoded
meanwhile, at most ``2 x streams`` photos (pixels and embedding) held at once; elsewhere (PyTorch and ONNX
Runtime use every thread for one photo) each photo is read and encoded in turn, as before (a photo's JPEG
decoding is a few percent of its encoding). Each photo's embedding is the one
``Backend.encode`` gives (the same kernels in fp32: tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from persam.backends.base import Backend, EncodedImage

T = TypeVar("T")
#: The values of ``persam index --encode``: the runtime's throughput mode where it has one, or one photo at a time.
ENCODE_MODES = ("throughput", "latency")


def encoder_streams(backend: Backend, mode: str = "throughput") -> tuple[Callable | None, int]:
    """(the runtime encoder to call, photos encoded at once) for ``mode``.

    "throughput": the runtime's throughput mode and its streams where it has one; "latency" (and every
    runtime without one): the backend's own encoder, one photo at a time.
    """
    runtime = backend.runtime_encoder
    if mode == "throughput" and runtime is not None and hasattr(runtime, "throughput"):
        found = runtime.throughput()
        if found is not None:
            return found
    return None, 1


def encode_in_order(
    backend: Backend,
    photos: Iterable[T],
    read: Callable[[T], np.ndarray],
    mode: str = "throughput",
) -> Iterator[tuple[T, np.ndarray | None, EncodedImage | Exception]]:
    """Each photo with its pixels and its encoded image, or the exception that reading or encoding raised,
    in input order (see the module docstring).

    Args:
        backend: the model.
        photos: what ``read`` takes (paths).
        read: a photo's (H, W, 3) uint8 RGB pixels.
        mode: "throughput" or "latency" (``encoder_streams``).
    """
    runtime, streams = encoder_streams(backend, mode)

    def one(photo: T) -> tuple[np.ndarray | None, EncodedImage | Exception]:
        try:
            pixels = read(photo)
        except Exception as exc:
            return None, exc
        try:
            return pixels, backend.encode(pixels, runtime)
        except Exception as exc:
            return pixels, exc

    if streams == 1:  # every thread on one photo: read and encode each in turn, here
        for photo in photos:
            yield (photo, *one(photo))
        return
    window: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=streams + 1) as pool:  # one more: the next photo read meanwhile
        for photo in photos:
            window.append((photo, pool.submit(one, photo)))
            if len(window) > 2 * streams:
                done, future = window.popleft()
                yield (done, *future.result())
        while window:
            done, future = window.popleft()
            yield (done, *future.result())
