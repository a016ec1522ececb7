"""Tests for persam.backends.checkpoints: all network traffic stays on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import platformdirs
import pytest
import torch

from persam.backends import checkpoints as ck
from persam.backends.checkpoints import (
    KNOWN_CHECKPOINTS,
    CheckpointError,
    CheckpointInfo,
    cache_dir,
    cached_checkpoint,
    download_checkpoint,
    file_sha256,
    load_state_dict,
    resolve_checkpoint,
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Keep the real cache and any URL overrides out of every test."""
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    for name in list(os.environ):
        if name.startswith("PERSAM_CHECKPOINT_URL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def payload(tmp_path) -> bytes:
    """Bytes of a small real checkpoint (a few MiB so it spans several chunks)."""
    path = tmp_path / "src.pth"
    torch.manual_seed(0)
    torch.save({"a.weight": torch.randn(4, 4), "b.bias": torch.randn(700_000)}, path)
    return path.read_bytes()


@pytest.fixture
def server(payload):
    """HTTP server on 127.0.0.1: ``/ok.pth`` serves ``payload``, ``/cut.pth`` lies about its length."""
    requests: list[str] = []
    routes = {"/ok.pth": (payload, len(payload)), "/cut.pth": (payload[:1000], len(payload))}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server naming
            requests.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, declared = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(base=f"http://127.0.0.1:{httpd.server_address[1]}", requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _info(url: str, sha: str | None, model_type: str = "vit_test") -> CheckpointInfo:
    return CheckpointInfo(model_type=model_type, url=url, sha256=sha, filename="test.pth")


def _assert_user_message(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg
    assert "--checkpoint PATH" in msg
    return msg


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- download ---------------------------------------------------------------------------------


def test_download_verifies_hash_and_then_uses_cache(server, payload, tmp_path):
    sha = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"
    path = download_checkpoint(_info(server.base + "/ok.pth", sha), cache=cache, progress=False)
    assert path == cache / "test.pth"
    assert path.read_bytes() == payload
    assert file_sha256(path) == sha
    assert sorted(p.name for p in cache.iterdir()) == ["test.pth"]  # no temp files left
    assert server.requests == ["/ok.pth"]

    again = download_checkpoint(_info(server.base + "/ok.pth", sha), cache=cache, progress=False)
    assert again == path
    assert server.requests == ["/ok.pth"]  # cache hit: the server was not asked again


def test_cached_file_with_wrong_hash_is_downloaded_again(server, payload, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "test.pth").write_bytes(b"stale")
    sha = hashlib.sha256(payload).hexdigest()
    path = download_checkpoint(_info(server.base + "/ok.pth", sha), cache=cache, progress=False)
    assert path.read_bytes() == payload
    assert server.requests == ["/ok.pth"]


def test_download_from_file_url(payload, tmp_path):
    source = tmp_path / "mirror" / "weights.pth"
    source.parent.mkdir()
    source.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    path = download_checkpoint(
        _info("https://invalid.example/x", sha), cache=tmp_path / "c", url=source.as_uri(), progress=False
    )
    assert path.read_bytes() == payload
    assert load_state_dict(path).keys() == {"a.weight", "b.bias"}


def test_hash_mismatch_deletes_download_and_raises(server, tmp_path):
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as excinfo:
        download_checkpoint(_info(server.base + "/ok.pth", wrong), cache=cache, progress=False)
    msg = _assert_user_message(excinfo.value)
    assert wrong in msg and "expected" in msg and "got" in msg
    assert list(cache.iterdir()) == []


def test_interrupted_download_leaves_no_partial_file(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError) as excinfo:
        download_checkpoint(_info(server.base + "/cut.pth", None), cache=cache, progress=False)
    msg = _assert_user_message(excinfo.value)
    assert "interrupted" in msg and "/cut.pth" in msg
    assert list(cache.iterdir()) == []
    assert server.requests == ["/cut.pth"]


def test_exception_mid_stream_cleans_up_temp_file(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    seen_during_download: list[list[str]] = []
    calls: list[dict] = []

    class Broken(io.BytesIO):
        headers = {"Content-Length": "10000000"}

        def read(self, n=-1):
            seen_during_download.append(sorted(p.name for p in cache.iterdir()))
            if len(seen_during_download) > 1:
                raise ConnectionResetError("peer reset")
            return b"x" * 1024

    def fake_urlopen(url, *args, **kwargs):
        calls.append(kwargs)
        return Broken()

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(CheckpointError) as excinfo:
        download_checkpoint(_info("http://127.0.0.1:1/x.pth", None), cache=cache, progress=False)
    assert "ConnectionResetError" in _assert_user_message(excinfo.value)
    assert calls and calls[0].get("timeout")  # urlopen is given a timeout
    # the download went to a temp file beside the target, and it is gone now
    assert seen_during_download[0] and seen_during_download[0][0].startswith(".test.pth.")
    assert list(cache.iterdir()) == []


def test_unreachable_host(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/x.pth"
    with pytest.raises(CheckpointError) as excinfo:
        download_checkpoint(_info(url, None), cache=tmp_path / "cache", progress=False)
    msg = _assert_user_message(excinfo.value)
    assert "could not reach" in msg and url in msg
    assert not (tmp_path / "cache" / "test.pth").exists()


def test_timeout_is_reported_as_unreachable(monkeypatch, tmp_path):
    def fake_urlopen(url, *args, **kwargs):
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(CheckpointError) as excinfo:
        download_checkpoint(_info("http://127.0.0.1:9/x.pth", None), cache=tmp_path, progress=False)
    assert "timed out" in _assert_user_message(excinfo.value)


def test_http_error_status(server, tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        download_checkpoint(_info(server.base + "/missing.pth", None), cache=tmp_path / "c", progress=False)
    assert "404" in _assert_user_message(excinfo.value)
    assert list((tmp_path / "c").iterdir()) == []


def test_progress_bar_is_shown_when_asked(server, payload, tmp_path, capsys):
    download_checkpoint(_info(server.base + "/ok.pth", None), cache=tmp_path, progress=True)
    assert "test.pth" in capsys.readouterr().err


# --- cache location, env overrides, resolve ---------------------------------------------------


def test_persam_home_is_respected_and_not_created(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "ph"))
    assert cache_dir() == tmp_path / "ph" / "checkpoints"
    assert not (tmp_path / "ph").exists()
    monkeypatch.delenv("PERSAM_HOME")
    assert cache_dir() == Path(platformdirs.user_cache_dir("persam")) / "checkpoints"


def test_known_checkpoints_table():
    sam2 = {f"sam2.1_hiera_{s}" for s in ("tiny", "small", "base_plus", "large")}
    assert set(KNOWN_CHECKPOINTS) == {"vit_h", "vit_l", "vit_b", "vit_t"} | sam2
    assert KNOWN_CHECKPOINTS["vit_t"].sha256 is None
    assert KNOWN_CHECKPOINTS["sam2.1_hiera_base_plus"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt"
    )
    assert all(KNOWN_CHECKPOINTS[n].sha256 is None for n in sam2)  # none published: strict load instead
    assert KNOWN_CHECKPOINTS["vit_b"].filename == "sam_vit_b_01ec64.pth"
    for info in KNOWN_CHECKPOINTS.values():
        assert info.url.endswith("/" + info.filename)
        assert info.sha256 is None or len(info.sha256) == 64


def test_resolve_known_type_with_env_url_override(monkeypatch, server, payload, tmp_path, caplog):
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "ph"))
    monkeypatch.setenv("PERSAM_CHECKPOINT_URL_VIT_T", server.base + "/ok.pth")
    assert cached_checkpoint("vit_t") is None
    with caplog.at_level(logging.INFO, logger="persam.backends.checkpoints"):
        path = resolve_checkpoint("vit_t", None, progress=False)
    assert path == tmp_path / "ph" / "checkpoints" / "mobile_sam.pt"
    assert path.read_bytes() == payload
    assert hashlib.sha256(payload).hexdigest() in caplog.text  # unpublished hash is logged
    assert cached_checkpoint("vit_t") == path
    assert resolve_checkpoint("vit_t", None, progress=False) == path
    assert server.requests == ["/ok.pth"]


def test_explicit_url_beats_env_override(monkeypatch, server, tmp_path):
    monkeypatch.setenv("PERSAM_CHECKPOINT_URL_VIT_TEST", server.base + "/missing.pth")
    download_checkpoint(
        _info("https://invalid.example/x", None), cache=tmp_path, url=server.base + "/ok.pth", progress=False
    )
    assert server.requests == ["/ok.pth"]


def test_resolve_user_checkpoint(tmp_path):
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"anything")
    assert resolve_checkpoint("vit_h", str(mine)) == mine
    with pytest.raises(FileNotFoundError) as excinfo:
        resolve_checkpoint("vit_h", tmp_path / "nope.pth")
    assert "nope.pth" in str(excinfo.value) and excinfo.value.field == "checkpoint"


def test_resolve_unknown_type_without_checkpoint():
    with pytest.raises(CheckpointError) as excinfo:
        resolve_checkpoint("vit_zz", None)
    msg = _assert_user_message(excinfo.value)
    assert "vit_zz" in msg and "no known download" in msg


# --- load_state_dict --------------------------------------------------------------------------


def test_load_plain_state_dict(tmp_path):
    sd = {"a.weight": torch.randn(4, 4), "b": torch.arange(3)}
    torch.save(sd, tmp_path / "sd.pth")
    loaded = load_state_dict(tmp_path / "sd.pth")
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert loaded["a.weight"].device.type == "cpu"


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_load_wrapped_state_dict(tmp_path, wrapper):
    sd = {"a.weight": torch.randn(2, 2)}
    torch.save({wrapper: sd, "epoch": 3}, tmp_path / "w.pth")
    loaded = load_state_dict(str(tmp_path / "w.pth"))
    assert list(loaded) == ["a.weight"]
    assert torch.equal(loaded["a.weight"], sd["a.weight"])


@pytest.mark.parametrize("content", [os.urandom(4096), b""], ids=["random", "empty"])
def test_load_corrupt_file(tmp_path, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as excinfo:
        load_state_dict(bad)
    msg = str(excinfo.value)
    assert "\n" not in msg and "bad.pth" in msg and "--checkpoint" in msg
    assert "not a PyTorch checkpoint or is damaged" in msg


@pytest.mark.parametrize(
    "obj", [[torch.zeros(1)], {}, {"a": torch.zeros(1), "n": 3}], ids=["list", "empty", "non-tensor"]
)
def test_load_non_state_dict(tmp_path, obj):
    torch.save(obj, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as excinfo:
        load_state_dict(tmp_path / "x.pth")
    assert "--checkpoint" in str(excinfo.value) and "x.pth" in str(excinfo.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_state_dict(tmp_path / "missing.pth")
    msg = str(excinfo.value)
    assert "missing.pth" in msg and "\n" not in msg


def test_import_does_no_work(tmp_path):
    """Importing the module creates no folder and does not import torch."""
    code = "import sys, persam.backends.checkpoints; print('torch' in sys.modules)"
    env = {
        **os.environ,
        "PERSAM_HOME": str(tmp_path / "fresh"),
        "PYTHONPATH": os.pathsep.join([str(Path(ck.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert not (tmp_path / "fresh").exists()


# ------------------------------------------------------------------ wrong-family checkpoints


def _shapes(spec: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in spec.items()}


def _vit(depth: int, width: int) -> dict[str, torch.Tensor]:
    spec = {"image_encoder.patch_embed.proj.weight": (width, 3, 16, 16), "mask_decoder.iou_token.weight": (1, 256)}
    spec.update({f"image_encoder.blocks.{i}.attn.qkv.weight": (3 * width, width) for i in range(depth)})
    return _shapes(spec)


@pytest.mark.parametrize(
    "depth, width, label, model_type",
    [
        (12, 768, "SAM ViT-B (12 blocks of width 768)", "vit_b"),
        (24, 1024, "SAM ViT-L (24 blocks of width 1024)", "vit_l"),
        (32, 1280, "SAM ViT-H (32 blocks of width 1280)", "vit_h"),
    ],
)
def test_sam_vits_are_told_apart(depth, width, label, model_type):
    from persam.backends.families import identify_checkpoint, mismatch_message

    state = _vit(depth, width)
    family = identify_checkpoint(state)
    assert (family.label, family.model_type) == (label, model_type)
    msg = mismatch_message("vit_t", state, _vit(1, 48))
    assert msg == (
        f"weights do not fit model type 'vit_t': the file looks like {label}; pass --model {model_type}, "
        "or another --checkpoint PATH"
    )


def test_sam2_files_are_named_and_hq_sam_has_no_backend():
    from persam.backends.families import identify_checkpoint, mismatch_message

    sam2 = {"image_encoder.trunk.patch_embed.proj.weight": (96, 3, 7, 7), "memory_attention.norm.weight": (256,)}
    sam2.update({f"image_encoder.trunk.blocks.{i}.mlp.layers.0.weight": (384, 96) for i in range(12)})
    assert identify_checkpoint(_shapes(sam2)).label.startswith("SAM 2.0 (Hiera-T)")  # no SAM 2.1 key
    msg = mismatch_message("vit_b", _shapes(sam2), _vit(12, 768))
    assert "persam has no backend for it" in msg
    sam21 = dict(sam2, no_obj_embed_spatial=(1, 64))
    assert identify_checkpoint(_shapes(sam21)).model_type == "sam2.1_hiera_tiny"
    msg = mismatch_message("vit_b", _shapes(sam21), _vit(12, 768))
    assert "looks like SAM 2.1 (Hiera-T); pass --model sam2.1_hiera_tiny" in msg
    hq = _vit(32, 1280)
    hq["mask_decoder.hf_token.weight"] = torch.empty((1, 256), device="meta")
    family = identify_checkpoint(hq)
    assert family.model_type is None and "HQ-SAM" in family.label
    assert identify_checkpoint(_shapes({"x.weight": (2, 2)})) is None


def test_tinyvit_families_from_the_real_modules():
    from persam.backends.builders import build_parts
    from persam.backends.families import identify_checkpoint, mismatch_message

    mobile = build_parts("vit_t")[3].state_dict()
    lite = build_parts("litemedsam")[3].state_dict()
    assert identify_checkpoint(mobile).model_type == "vit_t"
    assert identify_checkpoint(lite).model_type == "litemedsam"
    msg = mismatch_message("litemedsam", mobile, lite)
    assert msg.endswith(
        "looks like MobileSAM (TinyViT image encoder); pass --model vit_t, or another --checkpoint PATH"
    )


def test_same_family_damaged_file_counts_keys():
    from persam.backends.families import mismatch_message

    expected = _vit(12, 768)
    state = dict(expected)
    del state["mask_decoder.iou_token.weight"]
    state["image_encoder.extra.weight"] = torch.empty((1,), device="meta")
    state["image_encoder.patch_embed.proj.weight"] = torch.empty((768, 3, 8, 8), device="meta")
    msg = mismatch_message("vit_b", state, expected)
    assert (
        "looks like SAM ViT-B (12 blocks of width 768), but keys: 1 missing, e.g. 'mask_decoder.iou_token.weight'"
        in msg
    )
    assert "1 unexpected, e.g. 'image_encoder.extra.weight'" in msg
    assert "1 of another shape, e.g. 'image_encoder.patch_embed.proj.weight'" in msg
    del state["image_encoder.blocks.3.attn.qkv.weight"]  # an unknown ViT size: counted too, not sent elsewhere
    assert "looks like a SAM ViT (11 blocks of width 768), but keys: 2 missing" in mismatch_message(
        "vit_b", state, expected
    )


def test_wrong_family_through_load_is_one_short_line(tiny_checkpoint):
    import persam

    with pytest.raises(CheckpointError) as excinfo:
        persam.load("litemedsam", tiny_checkpoint, device="cpu")
    msg = _assert_user_message(excinfo.value)
    assert len(msg) < 300
    assert msg == (
        f"{tiny_checkpoint}: weights do not fit model type 'litemedsam': the file looks like the tiny "
        "test SAM (1 blocks of width 48); pass --model sam_tiny, or another --checkpoint PATH"
    )
