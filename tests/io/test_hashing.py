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
    payload = bytes(range(256)) * 9000 + b"tail"  # > 2 MiB
    path = tmp_path / "big.bin"
    path.write_bytes(payload)
    assert file_sha256(str(path)) == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5])
def test_every_size_around_the_chunk_boundary(tmp_path, monkeypatch, size):
    from persam.io import hashing

    monkeypatch.setattr(hashing, "_CHUNK", 4096)  # several chunks, a partial last one, an exact fit
    payload = bytes((i * 7 + 3) % 251 for i in range(size))
    path = tmp_path / "f.bin"
    path.write_bytes(payload)
    assert file_sha256(path) == hashlib.sha256(payload).hexdigest()


def test_a_folder_is_refused_in_one_line(tmp_path):
    from persam.errors import InputError

    with pytest.raises(InputError, match="cannot be read"):
        file_sha256(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "nope")


def test_callers_share_the_one_hasher():
    from persam.backends import checkpoints
    from persam.session import album

    assert checkpoints.file_sha256 is file_sha256 and album.file_sha256 is file_sha256
