"""Embedding store: the album index as a folder of Parquet files, for one machine or a cluster.

A store is a folder (local, or any filesystem pyarrow opens: ``s3://bucket/album``, ``gs://...``) holding
``store.json`` (the model that made the embeddings) and ``*.parquet`` part files. Writers only ever add
part files, never rewrite one, so any number of writers (``persam index`` on one machine, or the workers of
a Ray cluster) can add to the same store, and a reader sees whole files only (a local part file is written
under a temporary name and renamed).

One row per photo and run, the row encoding of every album store (``persam.session.rows.Row``: path,
sha256, status, reason, height, width, the named ``arrays`` in one blob, written_ns, run). A photo indexed
again after it changed has several rows; the latest (``written_ns``) counts.

Durable per photo: the local writer (``add``/``skip``) writes each photo's row as its own part file, so a
kill loses at most the photo in flight. A part is then the size of one photo's arrays (2 MiB for SAM in
float16, 8 MiB for SAM 2.1), within the sizes Parquet readers and object stores handle well; the Ray writer
(``persam.jobs.ray_index``) writes one part per block of photos.

Damage: part files are written with page checksums and read with them checked. A part whose footer or
small columns cannot be read is left out and listed by ``damaged()`` ((part file, reason)), so its photos
are encoded again by ``persam index`` and reported by every reader; a row whose arrays cannot be read
raises ``StoreError`` naming the part file. A store of persam before this row encoding (``store.json``
version 1) is refused with a ``StoreError`` asking for a new store.

Why Parquet: Ray Data reads and writes it natively, pyarrow reads it from any filesystem without a server,
the columns let a reader fetch paths and hashes without touching the arrays, and append-only part files
need no locking (SQLite on a shared filesystem does).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from persam.errors import IncompatibleError, MissingInputError, OptionsError, OutputError, StoreError
from persam.io.hashing import file_sha256
from persam.session.rows import COLUMNS, Row, unpack_arrays

META = "store.json"
FORMAT = "persam-embeddings"
VERSION = 2
#: The columns ``latest`` reads: everything but the arrays.
SMALL = ("path", "sha256", "status", "written_ns", "run")
#: pyarrow's ``write_table``/``ParquetWriter`` options of every part file.
WRITE_OPTIONS = {"row_group_size": 1, "write_page_checksum": True}


def row_schema():
    """The pyarrow schema of a store row (``persam.session.rows.Row``)."""
    import pyarrow as pa

    types = {"height": pa.int32(), "width": pa.int32(), "arrays": pa.binary(), "written_ns": pa.int64()}
    return pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])


def table_of(rows: list[Row]):
    """The pyarrow table of ``rows``."""
    import pyarrow as pa

    return pa.Table.from_pylist([r.as_dict() for r in rows], schema=row_schema())


def arrow_errors() -> tuple[type[BaseException], ...]:
    """What pyarrow raises for a part file it cannot read: its own types, and ``OSError`` (its ``ArrowIOError``,
    e.g. a failed page checksum). Caught only around the read of one named part file."""
    import pyarrow as pa

    return (pa.ArrowException, OSError)


def resolve(uri: str | os.PathLike):
    """(pyarrow filesystem, path on it) of a local folder or a URI such as ``s3://bucket/album``."""
    from pyarrow import fs

    text = str(uri)
    if "://" in text and not text.startswith("file://"):
        return fs.FileSystem.from_uri(text)
    return fs.LocalFileSystem(), str(Path(text.removeprefix("file://")).resolve())


def read_bytes(path: str) -> bytes:
    """The bytes of a local photo or a URI."""
    if "://" not in path:
        return Path(path).read_bytes()
    from pyarrow import fs as pafs

    filesystem, inner = pafs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(inner) as f:
        return f.read()


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Parquet store (a folder or URI), not a SQLite index file (``.idx``, ``.db``,
    ``.sqlite`` or an existing file)."""
    text = str(path)
    if "://" in text:
        return True
    p = Path(text)
    return p.is_dir() or (not p.is_file() and p.suffix.lower() not in (".idx", ".db", ".sqlite", ".sqlite3"))


@dataclass
class Latest:
    """The latest row of one photo: where it is and what it says."""

    file: str
    row: int
    sha256: str | None
    status: str
    written_ns: int
    run: str


@dataclass
class EmbeddingStore:
    """An open Parquet embedding store (same interface as ``AlbumIndex``, plus the cluster's needs).

    Attributes:
        uri: the store as given.
        fs, root: its pyarrow filesystem and folder.
        run: this writer's id (``Row.run``).
    """

    uri: str
    fs: object
    root: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    _latest: dict[str, Latest] | None = None
    _damaged: list[tuple[str, str]] = field(default_factory=list)  # part files, found by ``latest``
    _damaged_rows: list[tuple[str, str]] = field(default_factory=list)  # rows, found by ``needs``
    _cache: tuple[str, object, np.ndarray, int, object] | None = None

    @classmethod
    def open(cls, uri: str | os.PathLike, create: bool = True) -> EmbeddingStore:
        """Open (or create) a store folder."""
        from pyarrow import fs as pafs

        filesystem, root = resolve(uri)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise OptionsError(
                f"{uri}: a file, not an embedding store folder; choose a folder name (or an .idx file for SQLite)",
                path=uri,
            )
        if not create and filesystem.get_file_info(f"{root}/{META}").type != pafs.FileType.File:
            raise MissingInputError(
                f"{uri}: no embedding store there (no {META}); build it with persam index", path=uri
            )
        if create:
            try:
                filesystem.create_dir(root, recursive=True)
            except OSError as exc:  # pyarrow's message names the cause (a file in the way, no permission)
                raise OutputError(
                    f"{uri}: cannot create the embedding store folder ({str(exc).splitlines()[0]}); "
                    "where a part of the path is a file, or not writable, choose another output path",
                    path=uri,
                ) from None
        return cls(str(uri), filesystem, root)

    # model binding -------------------------------------------------------------------------------
    def meta(self) -> dict | None:
        """``store.json``, or None before the first photo."""
        try:
            with self.fs.open_input_stream(f"{self.root}/{META}") as f:
                meta = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not _names_model(meta):
            raise StoreError(f"{self.uri}/{META}: not a persam embedding store file; build a new store", path=self.uri)
        if meta.get("version") != VERSION:
            raise StoreError(
                f"{self.uri}: an embedding store of an older persam (version {meta.get('version')}); "
                "build a new store in another folder with persam index",
                path=self.uri,
            )
        return meta

    def bind_names(self, name: str, checkpoint_sha256: str) -> None:
        """Record the model on first use; refuse another model or checkpoint later."""
        meta = self.meta()
        if meta is None:
            text = {"format": FORMAT, "version": VERSION, "backend": name, "checkpoint_sha256": checkpoint_sha256}
            self._write(META, json.dumps(text, indent=2).encode())
        elif (meta["backend"], meta["checkpoint_sha256"]) != (name, checkpoint_sha256):
            raise IncompatibleError(
                f"{self.uri}: store was built with model {meta['backend']!r} (checkpoint "
                f"{meta['checkpoint_sha256'][:12]}…); use the same model and checkpoint or build a new store",
                path=self.uri,
                field="checkpoint",
            )

    def bind(self, backend) -> None:
        """``bind_names`` with a backend's name and checkpoint hash."""
        self.bind_names(backend.name, backend.checkpoint_sha256)

    def meta_value(self, key: str) -> str | None:
        """What ``store.json`` records under ``key`` (e.g. ``persam.session.features``'), or None."""
        return (self.meta() or {}).get(key)

    def record_meta(self, values: dict[str, str]) -> None:
        """Add ``values`` to ``store.json`` (after ``bind``: the model is recorded first)."""
        self._write(META, json.dumps({**(self.meta() or {}), **values}, indent=2).encode())

    # reading -------------------------------------------------------------------------------------
    def part_files(self) -> list[str]:
        """The part files, sorted."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not Path(i.path).name.startswith(".")
        )

    def latest(self) -> dict[str, Latest]:
        """{path: its latest row}, read from the small columns only (cached until the next write); a part
        file that cannot be read is left out and listed in ``damaged()``."""
        import pyarrow.parquet as pq

        if self._latest is not None:
            return self._latest
        latest: dict[str, Latest] = {}
        self._damaged = []
        for file in self.part_files():
            try:
                table = pq.read_table(file, columns=list(SMALL), filesystem=self.fs, page_checksum_verification=True)
            except arrow_errors() as exc:  # cut short, garbled, or not a part of this store's row encoding
                self._damaged.append((file, f"damaged part file, left out ({_one_line(exc)})"))
                continue
            cols = table.to_pydict()
            for i, (path, sha, status, ns, run) in enumerate(zip(*(cols[c] for c in SMALL))):
                old = latest.get(path)
                if old is None or ns >= old.written_ns:
                    latest[path] = Latest(file, i, sha, status, ns, run)
        self._latest = latest
        return latest

    def damaged(self) -> list[tuple[str, str]]:
        """(part file, one-line reason) of each part file that could not be read (its photos are left out)
        and of each damaged row ``needs`` found."""
        self.latest()
        return [*self._damaged, *self._damaged_rows]

    def hashes(self) -> dict[str, str]:
        """{path: sha256} of the photos whose latest row is an embedding."""
        return {p: r.sha256 for p, r in self.latest().items() if r.status == "encoded"}

    def paths(self) -> list[str]:
        """Encoded photo paths, sorted."""
        return sorted(self.hashes())

    def needs(self, path: Path) -> bool:
        """Whether the local photo ``path`` is missing, skipped before, changed since it was encoded, or its
        row is damaged (read back and checked, as the SQLite index does; listed in ``damaged()``)."""
        where = self.latest().get(str(path))
        if where is None or where.status != "encoded" or where.sha256 != file_sha256(path):
            return True
        try:
            unpack_arrays(self.read_at(where.file, where.row)["arrays"])
        except StoreError as exc:
            self._damaged_rows.append((where.file, f"{path}: {str(exc).removeprefix(f'{where.file}: ')}"))
            return True
        return False

    def reason(self, path: str) -> str | None:
        """Why the latest row of ``path`` is "skipped" (None if it is not)."""
        where = self.latest().get(str(path))
        return None if where is None or where.status != "skipped" else self.read_at(where.file, where.row)["reason"]

    def row(self, path: str | os.PathLike, encoded: bool = True) -> dict:
        """The latest row of ``path`` (all columns); with ``encoded``, only if it holds an embedding."""
        where = self.latest().get(str(path))
        if where is None or (encoded and where.status != "encoded"):
            raise MissingInputError(f"{path}: not in the store {self.uri}; index it with persam index", path=path)
        return self.read_at(where.file, where.row)

    def read_at(self, file: str, row: int) -> dict:
        """Row ``row`` of part file ``file`` (all columns), one row group read (kept for the next call).

        Raises:
            StoreError: the part file cannot be read there (named in the message).
        """
        import pyarrow.parquet as pq

        try:
            if self._cache is None or self._cache[0] != file:
                parquet = pq.ParquetFile(file, filesystem=self.fs, page_checksum_verification=True)
                sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
                self._cache = (file, parquet, np.cumsum([0, *sizes]), -1, None)
            _, parquet, starts, group, table = self._cache
            g = int(np.searchsorted(starts, row, side="right") - 1)
            if g != group:
                table = parquet.read_row_group(g, columns=list(COLUMNS))
                self._cache = (file, parquet, starts, g, table)
            return {k: v[0] for k, v in table.slice(row - int(starts[g]), 1).to_pydict().items()}
        except arrow_errors() as exc:
            self._cache = None
            raise StoreError(f"{file}: damaged part file of the store ({_one_line(exc)})", path=file) from None

    def encoded(self, path: str | os.PathLike, backend):
        """The stored arrays of ``path`` as an ``EncodedImage`` on ``backend``'s device.

        Raises:
            MissingInputError: ``path`` is not in the store.
            StoreError: its part file or its arrays are damaged.
            IncompatibleError: it was encoded by another model family.
        """
        self.bind(backend)
        where = self.latest().get(str(path))
        if where is None or where.status != "encoded":
            raise MissingInputError(f"{path}: not in the store {self.uri}; index it with persam index", path=path)
        return self.encoded_at(where.file, where.row, backend)

    def encoded_at(self, file: str, row: int, backend):
        """``encoded`` of the row at ``file``, ``row`` (a Ray worker given the locations)."""
        r = self.read_at(file, row)
        try:
            arrays = unpack_arrays(r["arrays"])
        except StoreError as exc:
            raise StoreError(f"{file}: {r['path']}: {exc}; index it again with persam index", path=file) from None
        try:
            return backend.from_arrays(arrays, (r["height"], r["width"]))
        except IncompatibleError as exc:
            raise IncompatibleError(f"{self.uri}: {r['path']}: {exc}; build a new store", path=self.uri) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    # writing (the local path; Ray writes part files with ``write_parquet``) -----------------------
    def add(self, path: Path, encoded, dtype: Literal["float16", "float32"] = "float16") -> None:
        """Store one photo's arrays (``EncodedImage.arrays``): a part file of its own, written now."""
        hw = encoded.geometry.original_hw
        self.add_row(Row.encoded(str(path), file_sha256(path), encoded.arrays(), hw, dtype, self.run))

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Record that ``path`` could not be encoded, and why."""
        self.add_row(Row.skipped(str(path), None, reason, self.run))

    def add_row(self, row: Row) -> None:
        """Write ``row`` as one part file (atomically on a local folder)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table_of([row]), sink, **WRITE_OPTIONS)
        self._write(f"local-{self.run}-{time.time_ns()}.parquet", sink.getvalue().to_pybytes())
        self._latest = None

    def _write(self, name: str, data: bytes) -> None:
        from pyarrow import fs as pafs

        if isinstance(self.fs, pafs.LocalFileSystem):
            from persam.io.atomic import atomic_write_bytes

            atomic_write_bytes(Path(self.root) / name, data)
        else:  # an object store puts whole objects
            with self.fs.open_output_stream(f"{self.root}/{name}") as f:
                f.write(data)

    def close(self) -> None:
        """Nothing is buffered: every row is written when it is added."""


def _names_model(meta: dict) -> bool:
    """Whether ``store.json`` names its model (an older version, refused after, may not)."""
    keys = ("backend", "checkpoint_sha256")
    return meta.get("version") != VERSION or all(isinstance(meta.get(k), str) for k in keys)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def require_readable(album) -> None:
    """Raise ``StoreError`` naming the first damaged part file when damage leaves ``album`` no photo to read."""
    damaged = album.damaged()
    if damaged and not album.paths():
        file, reason = damaged[0]
        more = f" (and {len(damaged) - 1} more part files)" if len(damaged) > 1 else ""
        raise StoreError(f"{file}: {reason}{more}; no photo of the store can be read; index them again", path=file)


def open_album(path: str | os.PathLike, create: bool = True):
    """The album index at ``path``: an ``EmbeddingStore`` (folder or URI) or a SQLite ``AlbumIndex`` (``.idx`` file)."""
    if is_store(path):
        return EmbeddingStore.open(path, create=create)
    from persam.session.album import AlbumIndex

    return AlbumIndex.open(path, create=create)
