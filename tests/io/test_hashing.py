"""persam.io.hashing.file_sha256: the one file hasher."""

from __future__ import annotations

import hashlib

import pytest

from persam.io.hashing import file_sha256


def test_known_digest(tmp_path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_file_larger_than_one_chunk(tmp_path):
    payload = bytes(range(256)) * 9000 + b"tail"  # > 2 MiB: several chunks
    path = tmp_path / "big.bin"
    path.write_bytes(payload)
    assert file_sha256(str(path)) == hashlib.sha256(payload).hexdigest()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "nope")


def test_callers_share_the_one_hasher():
    from persam.backends import checkpoints
    from persam.session import album

    assert checkpoints.file_sha256 is file_sha256 and album.file_sha256 is file_sha256
