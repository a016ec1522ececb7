"""Uploaded zips that climb out, link out or blow up are refused, and nothing is written outside the upload
folder (``persam.app.files.expand_uploads``, the one place the app opens zips).

Every case looks at the whole test folder before and after: a refused zip writes nothing anywhere; a zip that
unpacks writes only under the upload folder.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import synthetic_photo
from persam.app import files
from persam.errors import InputError


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (files, folders, links; links not followed), relative, with its kind."""
    out = set()
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            kind = "link" if path.is_symlink() else ("dir" if path.is_dir() else "file")
            out.add(f"{kind}:{path.relative_to(root).as_posix()}")
    return out


def jpeg_bytes(seed: int = 1) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_photo(seed=seed)[0]).save(buf, format="JPEG")
    return buf.getvalue()


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def declare_size(path: Path, size: int) -> Path:
    """Rewrite the uncompressed size a one-member zip declares (local header and central directory)."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, size)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, size)
    path.write_bytes(bytes(data))
    return path


def symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def place(tmp_path):
    """(the zip folder, the upload folder): both inside ``tmp_path``, with a file beside them to overwrite."""
    (tmp_path / "zips").mkdir()
    (tmp_path / "escape.jpg").write_bytes(b"keep")
    return tmp_path / "zips", tmp_path / "uploads" / "work"


def refused(tmp_path: Path, zip_path: Path, workdir: Path, match: str) -> None:
    """The zip is refused with ``match`` in the message, and the test folder is as it was."""
    before = tree(tmp_path)
    with pytest.raises(InputError, match=match) as info:
        files.expand_uploads([zip_path], workdir)
    assert str(workdir.parent) not in str(info.value)  # the upload's name, never the server's path
    assert tree(tmp_path) == before
    assert (tmp_path / "escape.jpg").read_bytes() == b"keep"


@pytest.mark.parametrize(
    "name",
    [
        "../escape.jpg",
        "../../escape.jpg",
        "trip/../../../escape.jpg",
        "..\\..\\escape.jpg",
        "C:/escape.jpg",
        "ABSOLUTE",
    ],
)
def test_a_member_outside_the_zip_refuses_it_whole(place, tmp_path, name):
    zips, workdir = place
    name = str(tmp_path / "escape.jpg") if name == "ABSOLUTE" else name
    bad = make_zip(zips / "bad.zip", [("first.jpg", jpeg_bytes()), (name, jpeg_bytes(2))])  # a good one first
    assert zipfile.ZipFile(bad).namelist()[1] == name  # zipfile kept the name as written
    refused(tmp_path, bad, workdir, "points outside the zip")


def test_symbolic_links_are_refused(place, tmp_path):
    zips, workdir = place
    link = make_zip(zips / "link.zip", [(symlink_member("photo.jpg", str(tmp_path / "escape.jpg")), b"")])
    refused(tmp_path, link, workdir, "'photo.jpg' is a symbolic link")
    folder = make_zip(zips / "dir.zip", [(symlink_member("trip", "../.."), b""), ("trip/a.jpg", jpeg_bytes())])
    refused(tmp_path, folder, workdir, "'trip' is a symbolic link")


def test_a_link_already_in_the_upload_folder_is_not_followed(place, tmp_path):
    zips, workdir = place
    (workdir / "unzipped-0").mkdir(parents=True)
    (workdir / "unzipped-0" / "trip").symlink_to(tmp_path)
    good = make_zip(zips / "good.zip", [("trip/escape.jpg", jpeg_bytes())])
    refused(tmp_path, good, workdir, "points outside the zip")


def test_zip_bombs_are_refused_before_unpacking(place, tmp_path):
    zips, workdir = place
    huge = declare_size(make_zip(zips / "huge.zip", [("a.jpg", b"\0" * 1000)]), files.MAX_ZIP_BYTES + 1)
    assert zipfile.ZipFile(huge).infolist()[0].file_size == files.MAX_ZIP_BYTES + 1
    refused(tmp_path, huge, workdir, "huge.zip: more than 2000 photos or 2 GiB inside")
    photos = make_zip(zips / "photos.zip", [(f"{i}.jpg", b"") for i in range(files.MAX_ZIP_PHOTOS + 1)])
    refused(tmp_path, photos, workdir, "photos.zip: more than 2000 photos")
    entries = make_zip(zips / "entries.zip", [(f"{i}.txt", b"") for i in range(files.MAX_ZIP_ENTRIES)])
    with zipfile.ZipFile(entries, "a") as z:
        z.writestr("a.jpg", jpeg_bytes())
    refused(tmp_path, entries, workdir, "entries.zip: more than 20000 entries inside")


def test_a_member_larger_than_it_declares_stops_at_its_declared_size(place, tmp_path):
    zips, workdir = place
    liar = declare_size(make_zip(zips / "liar.zip", [("a.jpg", b"\0" * (64 << 20))]), 1000)  # 64 MiB in 64 KiB
    before = tree(tmp_path)
    with pytest.raises(InputError, match=r"liar.zip: member 'a.jpg' does not unpack \(Bad CRC-32"):
        files.expand_uploads([liar], workdir)
    assert {p for p in tree(tmp_path) - before if not p.startswith("dir:")} == set()  # no file left
    assert all(p == "dir:uploads" or p.startswith("dir:uploads/work") for p in tree(tmp_path) - before)


def test_names_twice_or_a_photo_that_is_also_a_folder_are_messages(place, tmp_path):
    zips, workdir = place
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = make_zip(zips / "twice.zip", [("a.jpg", jpeg_bytes(1)), ("a.jpg", jpeg_bytes(2))])
    with pytest.raises(InputError, match="'a.jpg' is twice in the zip"):
        files.expand_uploads([twice], workdir / "1")
    both = make_zip(zips / "both.zip", [("a.jpg", jpeg_bytes(1)), ("a.jpg/b.jpg", jpeg_bytes(2))])
    with pytest.raises(InputError, match="both.zip: member 'a.jpg/b.jpg' does not unpack"):
        files.expand_uploads([both], workdir / "2")


def test_a_good_zip_unpacks_only_under_the_upload_folder(place, tmp_path):
    zips, workdir = place
    good = make_zip(zips / "good.zip", [("trip/a.jpg", jpeg_bytes(1)), ("b.jpg", jpeg_bytes(2)), ("notes.txt", b"x")])
    before = tree(tmp_path)
    pairs = files.expand_uploads([good], workdir)
    assert [stem for _, stem in pairs] == ["trip/a", "b"]
    assert [p.read_bytes() for p, _ in pairs] == [jpeg_bytes(1), jpeg_bytes(2)]
    assert tree(tmp_path) - before == {
        "dir:uploads",
        "dir:uploads/work",
        "dir:uploads/work/unzipped-0",
        "dir:uploads/work/unzipped-0/trip",
        "file:uploads/work/unzipped-0/trip/a.jpg",
        "file:uploads/work/unzipped-0/b.jpg",
    }
