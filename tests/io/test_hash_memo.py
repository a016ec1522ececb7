"""persam.io.hash_memo: a file's SHA-256 remembered while the file stays as it was, never a stale one."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from persam.errors import MissingInputError
from persam.io import hash_memo
from persam.io.hash_memo import remembered_sha256

#: Shorter than the default, so that a test need not wait; files are written this long before hashing.
SETTLE = 0.05


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """The files ``remembered_sha256`` actually read (hashed), in order; the settle time shortened."""
    seen: list[Path] = []
    real = hash_memo.file_sha256
    monkeypatch.setattr(hash_memo, "file_sha256", lambda p: seen.append(Path(p)) or real(p))
    monkeypatch.setattr(hash_memo, "SETTLE_S", SETTLE)
    return seen


def settled(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    time.sleep(SETTLE * 3)
    return path


def test_an_unchanged_file_is_read_once(tmp_path, reads) -> None:
    f = settled(tmp_path / "w.pt", b"weights" * 1000)
    first = remembered_sha256(f, tmp_path / "memo")
    second = remembered_sha256(f, tmp_path / "memo")
    assert first == second == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert reads == [f]


def test_a_rewrite_of_the_same_size_is_hashed_again(tmp_path, reads) -> None:
    f = settled(tmp_path / "w.pt", b"a" * 4096)
    assert remembered_sha256(f, tmp_path / "memo") == hashlib.sha256(b"a" * 4096).hexdigest()
    f.write_bytes(b"b" * 4096)  # same size, same inode: its times change
    assert remembered_sha256(f, tmp_path / "memo") == hashlib.sha256(b"b" * 4096).hexdigest()
    assert len(reads) == 2


def test_times_set_back_do_not_bring_back_the_old_digest(tmp_path, reads) -> None:
    f = settled(tmp_path / "w.pt", b"a" * 4096)
    st = f.stat()
    remembered_sha256(f, tmp_path / "memo")
    time.sleep(SETTLE)
    f.write_bytes(b"c" * 4096)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old modification time; the change time moves on
    assert remembered_sha256(f, tmp_path / "memo") == hashlib.sha256(b"c" * 4096).hexdigest()


def test_another_file_at_the_same_path_is_hashed(tmp_path, reads) -> None:
    f = settled(tmp_path / "w.pt", b"old")
    remembered_sha256(f, tmp_path / "memo")
    new = settled(tmp_path / "new.pt", b"new")
    os.replace(new, f)  # another inode
    assert remembered_sha256(f, tmp_path / "memo") == hashlib.sha256(b"new").hexdigest()
    assert len(reads) == 2


def test_a_file_changed_just_before_hashing_is_not_remembered(tmp_path, monkeypatch) -> None:
    counted: list[Path] = []
    real = hash_memo.file_sha256
    monkeypatch.setattr(hash_memo, "file_sha256", lambda p: counted.append(p) or real(p))
    f = tmp_path / "w.pt"
    f.write_bytes(b"fresh")  # the default settle time (seconds) has not passed
    remembered_sha256(f, tmp_path / "memo")
    remembered_sha256(f, tmp_path / "memo")
    assert len(counted) == 2 and not (tmp_path / "memo").exists()


def test_a_file_changed_while_it_is_hashed_is_not_remembered(tmp_path, reads, monkeypatch) -> None:
    f = settled(tmp_path / "w.pt", b"x" * 100)
    real = hashlib.sha256(b"x" * 100).hexdigest()

    def hash_then_change(path):
        time.sleep(0.01)
        Path(path).write_bytes(b"y" * 100)
        return real

    monkeypatch.setattr(hash_memo, "file_sha256", hash_then_change)
    remembered_sha256(f, tmp_path / "memo")
    assert not (tmp_path / "memo").exists() or not list((tmp_path / "memo").iterdir())


@pytest.mark.parametrize("record", ["not json", json.dumps([1, 2]), json.dumps({"sha256": "zz"})])
def test_a_damaged_record_is_ignored(tmp_path, reads, record) -> None:
    f = settled(tmp_path / "w.pt", b"data")
    remembered_sha256(f, tmp_path / "memo")
    (stored,) = (tmp_path / "memo").iterdir()
    entry = json.loads(stored.read_text())
    damaged = record if record != json.dumps({"sha256": "zz"}) else json.dumps({**entry, "sha256": "zz"})
    stored.write_text(damaged)
    assert remembered_sha256(f, tmp_path / "memo") == hashlib.sha256(b"data").hexdigest()
    assert len(reads) == 2


def test_a_memo_folder_that_cannot_be_written_still_gives_the_digest(tmp_path, reads) -> None:
    f = settled(tmp_path / "w.pt", b"data")
    blocked = tmp_path / "memo"
    blocked.write_text("a file where the folder would be")
    assert remembered_sha256(f, blocked) == hashlib.sha256(b"data").hexdigest()


def test_a_missing_file_is_reported_as_the_hasher_does(tmp_path) -> None:
    with pytest.raises(MissingInputError, match="no such file"):
        remembered_sha256(tmp_path / "nope.pt", tmp_path / "memo")


def test_a_model_load_reads_its_checkpoint_once(tmp_path, reads, monkeypatch) -> None:
    import persam
    from persam.backends.builders import write_random_checkpoint

    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    ckpt = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=1)
    time.sleep(SETTLE * 3)
    shas = [persam.load("sam_tiny", ckpt, device="cpu").backend.checkpoint_sha256 for _ in range(2)]
    assert shas[0] == shas[1] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert reads.count(Path(ckpt)) == 1
    assert list((tmp_path / "home" / "checkpoints" / "hashes").iterdir())
