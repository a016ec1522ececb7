"""``persam app`` as a service, started the way a user starts it (no ``--host``, no ``--max-file-size``):
it listens on loopback only, its upload limit is the documented default, and 200 requests in a row through
Gradio's HTTP API leave the server's memory within the bound stated in docs/reliability.md.

With ``CI=true`` a missing Gradio client or psutil is a failure, not a skip.
"""

from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import require
from served import serve

psutil = require("psutil")
gradio_client = require("gradio_client")

#: Largest growth of the server's RSS over 200 segment requests after a warm-up of 20 (MiB). Measured
#: on a 2-core machine: 3.4 to 4.5 MiB; with each request's photo (0.13 MiB decoded) kept in a list, 27.4 MiB.
RSS_GROWTH_MIB = 16
WARM_UP, REQUESTS = 20, 200


@pytest.fixture(scope="module")
def default_app(tmp_path_factory, tiny_checkpoint):
    with serve(tmp_path_factory.mktemp("app"), tiny_checkpoint, host=None) as served:
        yield served


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than 127.0.0.0/8."""
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


def test_the_default_host_is_loopback(default_app):
    listening = {
        c.laddr.ip
        for c in psutil.Process(default_app.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == default_app.port
    }
    assert listening == {"127.0.0.1"}
    for address in non_loopback_addresses():  # and from outside loopback nobody answers
        with pytest.raises(OSError), socket.create_connection((address, default_app.port), timeout=5):
            pass


def test_the_default_upload_limit_is_200_mib(default_app):
    with urllib.request.urlopen(default_app.url + "/config", timeout=10) as r:
        assert json.load(r)["max_file_size"] == 200 * 1024**2


def test_200_requests_keep_the_server_memory_bounded(default_app, tmp_path):
    ref, mask = synthetic_photo(seed=5)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    Image.fromarray(synthetic_photo(seed=30)[0]).save(tmp_path / "photo.png")
    client = gradio_client.Client(default_app.url, verbose=False, download_files=False)
    photo = gradio_client.handle_file(str(tmp_path / "photo.png"))

    def call(*args, api_name: str):
        return client.submit(*args, api_name=api_name).result(timeout=60)

    try:
        call(gradio_client.handle_file(str(tmp_path / "ref.png")), api_name="/on_photo")
        call(gradio_client.handle_file(str(tmp_path / "mask.png")), api_name="/on_mask")
        learned = call(
            "PerSAM (training-free)", [], None, "Similarity (PerSAM's one point)", 1, 5, api_name="/on_learn"
        )
        assert learned.startswith("concept ready")
        server = psutil.Process(default_app.proc.pid)

        def segment() -> None:
            *_, summary = call([photo], False, 1, api_name="/on_segment")
            assert summary.startswith("1 photo(s) segmented, 0 without the object, 0 skipped")

        for _ in range(WARM_UP):
            segment()
        before = server.memory_info().rss
        for _ in range(REQUESTS):
            segment()
        growth = (server.memory_info().rss - before) / 2**20
    finally:
        client.close()
    print(f"server RSS growth over {REQUESTS} requests: {growth:.1f} MiB")
    assert growth < RSS_GROWTH_MIB, f"the server grew by {growth:.1f} MiB over {REQUESTS} requests"


def test_max_file_size_takes_a_unit_and_refuses_a_bare_number(capsys):
    from persam.cli.app import file_size
    from persam.cli.main import main

    assert [file_size(t) for t in ("200mb", "1GB", "512 kb", "10b")] == [200 << 20, 1 << 30, 512 << 10, 10]
    for bad in ("200", "0mb", "2 parsecs", "-1mb", "1.5gb"):
        assert main(["app", f"--max-file-size={bad}", "--model", "sam_tiny", "--random-weights"]) == 2
        assert f"--max-file-size takes a size above 0 with a unit (b, kb, mb, gb, tb), e.g. 50mb; got {bad!r}" in (
            capsys.readouterr().err
        )
