"""DINOv2, the matcher prior's backbone: the download path against a local file server, and the features.

The server on 127.0.0.1 serves a tiny DINOv2 state dict in Meta's key layout
(timm's keys plus ``mask_token``): the first build downloads it into the cache,
the second reads the cache (no request), a damaged file is refused, and a
pinned SHA-256 is checked. The features are compared with transformers'
independent DINOv2 implementation carrying the same weights.
"""

from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from persam.backends.checkpoints import download_checkpoint
from persam.backends.dinov2 import DINO_MODELS, create_dino
from persam.errors import CheckpointError, OptionsError

TINY = {"embed_dim": 48, "depth": 2, "num_heads": 2}


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny DINOv2's weights in Meta's layout, every parameter random (LayerScale too)."""
    from reference_oracle_matcher import random_dinov2_state

    return random_dinov2_state(seed, **TINY)


@pytest.fixture
def served(tmp_path, monkeypatch):
    good = tmp_path / "good.pth"
    torch.save(official_state_dict(), good)
    payload = good.read_bytes()
    routes = {"/good.pth": payload, "/damaged.pth": payload[: len(payload) // 2]}
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server naming
            requests.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    try:
        yield SimpleNamespace(
            base=f"http://127.0.0.1:{httpd.server_address[1]}",
            requests=requests,
            payload=payload,
            home=tmp_path / "home",
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_registry_names_the_published_files():
    assert sorted(DINO_MODELS) == ["dinov2_vitb14", "dinov2_vitg14", "dinov2_vitl14", "dinov2_vits14"]
    spec = DINO_MODELS["dinov2_vitl14"]
    assert spec.checkpoint.url == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
    assert spec.timm_name == "vit_large_patch14_dinov2"
    with pytest.raises(OptionsError):
        create_dino("dinov2_vitx14", random_weights=True)


def test_download_then_cache(served, monkeypatch):
    import hashlib

    monkeypatch.setenv("PERSAM_CHECKPOINT_URL_DINOV2_VITS14", served.base + "/good.pth")
    first = create_dino("dinov2_vits14", device="cpu", architecture=dict(TINY))
    assert served.requests == ["/good.pth"]
    cached = served.home / "checkpoints" / "dinov2_vits14_pretrain.pth"
    assert cached.read_bytes() == served.payload
    assert first.checkpoint_sha256 == hashlib.sha256(served.payload).hexdigest()
    second = create_dino("dinov2_vits14", device="cpu", architecture=dict(TINY))
    assert served.requests == ["/good.pth"]  # the cache, no second download
    photo = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    assert torch.equal(first.encode(photo), second.encode(photo))
    # the weights are the served ones: the first block's qkv
    qkv = first.model.blocks[0].attn.qkv.weight
    assert torch.equal(qkv, official_state_dict()["blocks.0.attn.qkv.weight"])


def test_damaged_download_is_refused(served, monkeypatch):
    monkeypatch.setenv("PERSAM_CHECKPOINT_URL_DINOV2_VITS14", served.base + "/damaged.pth")
    with pytest.raises(CheckpointError):
        create_dino("dinov2_vits14", device="cpu", architecture=dict(TINY))


def test_pinned_checksum_is_checked(served, tmp_path):
    import hashlib

    info = DINO_MODELS["dinov2_vits14"].checkpoint
    good = dataclasses.replace(info, sha256=hashlib.sha256(served.payload).hexdigest())
    path = download_checkpoint(good, cache=tmp_path / "c1", url=served.base + "/good.pth")
    assert path.read_bytes() == served.payload
    wrong = dataclasses.replace(info, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        download_checkpoint(wrong, cache=tmp_path / "c2", url=served.base + "/damaged.pth")
    assert not (tmp_path / "c2" / info.filename).exists()


def test_other_size_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(official_state_dict(), path)
    with pytest.raises(CheckpointError, match="not a DINOv2 checkpoint of this size"):
        create_dino("dinov2_vits14", path, device="cpu", architecture={"embed_dim": 96, "depth": 2, "num_heads": 2})


def test_features_match_transformers_dinov2(tmp_path):
    """Pre-norm patch features (518 px, class token dropped) equal transformers' DINOv2 with the same weights."""
    from reference_oracle_matcher import OracleDino

    path = tmp_path / "w.pth"
    state = official_state_dict(seed=3)
    torch.save(state, path)
    ours = create_dino("dinov2_vits14", path, device="cpu", architecture=dict(TINY))
    oracle = OracleDino(state, num_heads=TINY["num_heads"])
    photo = np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    a = ours.encode(photo)
    b = oracle.features(photo)
    assert a.shape == (37 * 37, TINY["embed_dim"])
    assert float((a - b).abs().max() / b.abs().max()) < 1e-5
