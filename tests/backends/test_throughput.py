"""Encoding at throughput: OpenVINO's throughput mode gives the latency mode's embeddings; photos come back
in input order with a photo's own error in its place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import persam
from conftest import synthetic_photo
from extras import needs
from persam.backends.throughput import encode_in_order, encoder_streams
from persam.errors import InputError


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {f"p{i}": synthetic_photo(120 + 10 * i, 160, seed=i)[0] for i in range(5)}


def _read(photos):
    def read(name: str) -> np.ndarray:
        if name == "broken":
            raise InputError("broken: not an image")
        return photos[name]

    return read


@needs("openvino")
def test_openvino_throughput_mode_gives_the_latency_embeddings_in_order(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    model = persam.load("sam_tiny", random_weights=True, device="cpu", runtime="openvino")
    backend = model.backend
    runtime, streams = encoder_streams(backend, "throughput")
    assert runtime is not None and streams >= 1  # OpenVINO's optimal number of infer requests
    assert encoder_streams(backend, "latency") == (None, 1)
    names = ["p0", "p1", "broken", "p2", "p3", "p4"]
    got = list(encode_in_order(backend, names, _read(photos), "throughput"))
    assert [name for name, _, _ in got] == names
    for name, pixels, encoded in got:
        if name == "broken":
            assert pixels is None and isinstance(encoded, InputError)
            continue
        want = backend.encode(photos[name]).embedding
        assert pixels is photos[name]
        assert encoded.geometry.original_hw == photos[name].shape[:2]
        # the same kernels in fp32: equal up to float rounding, relative to the largest value
        assert float((encoded.embedding - want).abs().max() / want.abs().max()) <= 1e-5


def test_torch_encodes_one_photo_at_a_time_in_order(photos):
    torch.manual_seed(0)
    model = persam.load("sam_tiny", random_weights=True, device="cpu")
    assert encoder_streams(model.backend, "throughput") == (None, 1)  # no throughput mode: every thread, one photo
    names = ["p3", "broken", "p1", "p0"]
    got = list(encode_in_order(model.backend, names, _read(photos), "throughput"))
    assert [name for name, _, _ in got] == names
    for name, _, encoded in got:
        if name != "broken":
            assert torch.equal(encoded.embedding, model.backend.encode(photos[name]).embedding)
