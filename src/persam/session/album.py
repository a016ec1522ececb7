"""Album index: encode each photo once, segment it any number of times.

An index is one SQLite file holding one ``persam.session.rows.Row`` per photo (the latest: a photo indexed
again replaces its row), together with the backend and checkpoint that made them (table ``meta``). Every
photo is committed in its own transaction, so an interrupted ``persam index`` loses nothing finished and
leaves no half-written entry; running it again skips photos whose content is unchanged and re-encodes
changed ones.

The arrays (``rows.pack_arrays``) are stored as float16 by default (half the size: 2 MiB per photo for SAM's
256x64x64) or float32 for masks bit-identical to a direct run; SAM 2.1's two high-resolution maps
(32x256x256 and 64x128x128 for a 1024-px input) are three times the embedding's size again.

Damage: a file SQLite cannot read at all (``SQLITE_CORRUPT``, ``SQLITE_NOTADB`` where the table of photos
is) raises ``StoreError`` naming it; an entry whose bytes are damaged (SQLite reports its pages as corrupt,
or its checksum differs) raises ``StoreError`` for that photo only, and ``needs`` (which reads the entry to
check it) lists it in ``damaged()`` and has it encoded again. Indices of persam before this row encoding
(no ``version`` in ``meta``) are refused with a ``StoreError`` asking for a new index.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from persam.backends import Backend, EncodedImage
from persam.errors import IncompatibleError, MissingInputError, StoreError
from persam.io.hashing import file_sha256
from persam.session.rows import COLUMNS, Row, unpack_arrays

FORMAT = "persam-album"
VERSION = "2"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    path TEXT PRIMARY KEY, sha256 TEXT, status TEXT NOT NULL, reason TEXT, height INTEGER, width INTEGER,
    arrays BLOB, written_ns INTEGER NOT NULL, run TEXT NOT NULL
);
"""
#: SQLite's result codes that mean "the file is damaged or not a database" (``sqlite3.Error.sqlite_errorname``).
DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


@contextlib.contextmanager
def damage_as_store_error(file: Path, what: str = "", codes: tuple[str, ...] = DAMAGED) -> Iterator[None]:
    """Turn SQLite's "damaged file" errors (``codes``, default ``DAMAGED``) into one ``StoreError`` naming
    ``file``; any other SQLite error (a bug in a query, a locked file) goes on as it is."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", None) not in codes:
            raise
        where = f"{file}: {what}" if what else f"{file}:"
        raise StoreError(
            f"{where} the album index is damaged ({exc}); build a new one with persam index", path=file
        ) from None


def _text_of(file: Path, raw: bytes) -> str:
    """A TEXT value of the index (its ``text_factory``): UTF-8, or ``StoreError`` naming ``file`` if damaged."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(
            f"{file}: the album index is damaged (a text that is not UTF-8); build a new one with persam index",
            path=file,
        ) from None


@dataclass
class AlbumIndex:
    """An open album index (SQLite).

    Attributes:
        path: the index file.
        connection: the SQLite connection.
    """

    path: Path
    connection: sqlite3.Connection
    run: str = field(default_factory=lambda: os.urandom(16).hex())
    _damaged: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> AlbumIndex:
        """Open (or create) an index file.

        Raises:
            MissingInputError: ``create`` is False and there is no such file.
            StoreError: not a persam album index, one of an older persam, or damaged.
        """
        file = Path(path)
        if not create and not file.is_file():
            raise MissingInputError(f"{file}: no such index; build it with persam index", path=file)
        if create:
            file.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(file))
        con.text_factory = functools.partial(_text_of, file)
        # The first read of the file: a garbled header can also say SQLITE_ERROR ("unsupported file format").
        with damage_as_store_error(file, codes=(*DAMAGED, "SQLITE_ERROR")):
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        with damage_as_store_error(file):
            if tables and "rows" not in tables:
                con.close()
                raise StoreError(
                    f"{file}: an album index of an older persam or not one; build a new index with persam index",
                    path=file,
                )
            con.executescript(SCHEMA)
            if tuple(r[1] for r in con.execute("PRAGMA table_info(rows)")) != COLUMNS:
                con.close()
                raise StoreError(
                    f"{file}: the album index is damaged (its table of photos); build a new one", path=file
                )
            with con:
                con.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [("format", FORMAT), ("version", VERSION)])
        return cls(file, con)

    def _execute(self, sql: str, args: tuple = (), what: str = "") -> list[tuple]:
        with damage_as_store_error(self.path, what):
            return self.connection.execute(sql, args).fetchall()

    def _meta(self, key: str) -> str | None:
        rows = self._execute("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def bind(self, backend: Backend) -> None:
        """Record the backend on first use; refuse another backend or checkpoint later."""
        name, sha = self._meta("backend"), self._meta("checkpoint_sha256")
        if name is None:
            with damage_as_store_error(self.path), self.connection:
                self.connection.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("backend", backend.name), ("checkpoint_sha256", backend.checkpoint_sha256)],
                )
        elif (name, sha) != (backend.name, backend.checkpoint_sha256):
            raise IncompatibleError(
                f"{self.path}: index was built with model {name!r} (checkpoint {sha[:12]}…); "
                "use the same model and checkpoint or build a new index",
                path=self.path,
                field="checkpoint",
            )

    def meta_value(self, key: str) -> str | None:
        """What the index records under ``key`` (table ``meta``; e.g. ``persam.session.features``'), or None."""
        return self._meta(key)

    def record_meta(self, values: dict[str, str]) -> None:
        """Record ``values`` in the table ``meta`` (replacing earlier ones), in one transaction."""
        with damage_as_store_error(self.path), self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def hashes(self) -> dict[str, str]:
        """{path: sha256} of the encoded photos."""
        return dict(self._execute("SELECT path, sha256 FROM rows WHERE status = 'encoded' ORDER BY path"))

    def paths(self) -> list[str]:
        """Encoded photo paths, sorted."""
        return list(self.hashes())

    def damaged(self) -> list[tuple[str, str]]:
        """(the index file, "PHOTO: damaged entry (why)") for each damaged entry found so far (by ``needs``)."""
        return [(str(self.path), reason) for reason in self._damaged.values()]

    def needs(self, path: Path) -> bool:
        """Whether ``path`` is missing from the index, changed since it was indexed, or its entry is damaged
        (read back and checked: about as costly as hashing the photo). A damaged entry is deleted and listed in
        ``damaged()``; where SQLite cannot delete it, ``StoreError`` names the file."""
        try:
            rows = self.connection.execute("SELECT sha256, arrays FROM rows WHERE path = ?", (str(path),)).fetchall()
            if rows and rows[0][1] is not None:
                unpack_arrays(rows[0][1])
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", None) not in DAMAGED:
                raise
            self._forget(path, f"{path}: damaged entry ({exc})")
            return True
        except StoreError as exc:
            self._forget(path, f"{path}: {exc}")
            return True
        return not rows or rows[0][1] is None or rows[0][0] != file_sha256(path)

    def _forget(self, path: str | os.PathLike, reason: str) -> None:
        """Delete the damaged entry of ``path`` (a ``StoreError`` for the file where SQLite cannot) and list it."""
        with damage_as_store_error(self.path, f"{path}:"), self.connection:
            self.connection.execute("DELETE FROM rows WHERE path = ?", (str(path),))
        self._damaged[str(path)] = reason

    def _unpack(self, path: str | os.PathLike, blob: bytes) -> dict:
        try:
            return unpack_arrays(blob)
        except StoreError as exc:
            raise StoreError(f"{self.path}: {path}: {exc}; index it again with persam index", path=self.path) from None

    def add(self, path: Path, encoded: EncodedImage, dtype: Literal["float16", "float32"] = "float16") -> None:
        """Store one photo's arrays (``EncodedImage.arrays``), in one transaction."""
        self.add_row(
            Row.encoded(str(path), file_sha256(path), encoded.arrays(), encoded.geometry.original_hw, dtype, self.run)
        )

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Record that ``path`` could not be encoded, and why (replacing an earlier entry, as the store does)."""
        self.add_row(Row.skipped(str(path), None, reason, self.run))

    def add_row(self, row: Row) -> None:
        """Store ``row``, replacing the photo's earlier one (one transaction)."""
        marks = ", ".join("?" * len(COLUMNS))
        with damage_as_store_error(self.path, f"{row.path}:"), self.connection:
            self.connection.execute(f"INSERT OR REPLACE INTO rows VALUES ({marks})", tuple(row.as_dict().values()))

    def encoded(self, path: str | os.PathLike, backend: Backend) -> EncodedImage:
        """The stored arrays of ``path`` as an ``EncodedImage`` on ``backend``'s device.

        Raises:
            MissingInputError: ``path`` is not in the index.
            StoreError: its entry is damaged.
            IncompatibleError: it was encoded by another model family.
        """
        self.bind(backend)
        rows = self._execute(
            "SELECT height, width, arrays FROM rows WHERE path = ? AND status = 'encoded'", (str(path),), f"{path}:"
        )
        if not rows:
            raise MissingInputError(f"{path}: not in the index {self.path}; index it with persam index", path=path)
        h, w, blob = rows[0]
        arrays = self._unpack(path, blob)
        try:
            return backend.from_arrays(arrays, (h, w))
        except IncompatibleError as exc:
            raise IncompatibleError(f"{self.path}: {path}: {exc}; build a new index", path=self.path) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    def close(self) -> None:
        self.connection.close()
