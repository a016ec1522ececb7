"""Album index: encode each photo once, segment it any number of times.

An index is one SQLite file. Each photo's image embedding is stored with its
path, pixel size and the SHA-256 of the file's bytes, together with the
backend and checkpoint that made it. Every photo is committed in its own
transaction, so an interrupted ``persam index`` loses nothing finished and
leaves no half-written entry; running it again skips photos whose content
is unchanged and re-encodes changed ones.

Embeddings are stored as float16 by default (half the size: 2 MiB per photo
for SAM's 256x64x64) or float32 for masks bit-identical to a direct run.
SAM 2.1 models also need the decoder's two high-resolution skips
(``EncodedImage.high_res_features``: 32x256x256 and 64x128x128 for a 1024-px
input), stored in the same dtype in the ``features`` table: three times the
embedding's size again, 8 MiB per photo in float16 (16 MiB in float32).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from persam.backends import Backend, EncodedImage
from persam.errors import IncompatibleError, MissingInputError, StoreError
from persam.io.hashing import file_sha256

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, embedding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS features (
    path TEXT NOT NULL, level INTEGER NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (path, level)
);
"""


def _blob(x: torch.Tensor, dtype: str) -> tuple[str, bytes]:
    arr = x[0].detach().cpu().numpy().astype(dtype)
    return ",".join(map(str, arr.shape)), arr.tobytes()


def _tensor(blob: bytes, dtype: str, shape: str, device: torch.device) -> torch.Tensor:
    arr = np.frombuffer(blob, dtype=dtype).reshape(tuple(int(s) for s in shape.split(",")))
    return torch.from_numpy(arr.astype(np.float32))[None].to(device)


@dataclass
class AlbumIndex:
    """An open album index (SQLite).

    Attributes:
        path: the index file.
        connection: the SQLite connection.
    """

    path: Path
    connection: sqlite3.Connection

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> AlbumIndex:
        """Open (or create) an index file."""
        file = Path(path)
        if not create and not file.is_file():
            raise MissingInputError(f"{file}: no such index; build it with `persam index PHOTOS... -o {file.name}`")
        if create:
            file.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(str(file))
            con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{file}: not a persam album index ({exc}); build a new one with `persam index`") from None
        return cls(file, con)

    def _meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def bind(self, backend: Backend) -> None:
        """Record the backend on first use; refuse another backend or checkpoint later."""
        name, sha = self._meta("backend"), self._meta("checkpoint_sha256")
        if name is None:
            with self.connection:
                self.connection.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("backend", backend.name), ("checkpoint_sha256", backend.checkpoint_sha256)],
                )
        elif (name, sha) != (backend.name, backend.checkpoint_sha256):
            raise IncompatibleError(
                f"{self.path}: index was built with model {name!r} (checkpoint {sha[:12]}…); "
                f"pass the same --model/--checkpoint or build a new index"
            )

    def paths(self) -> list[str]:
        """Indexed photo paths, sorted."""
        return [r[0] for r in self.connection.execute("SELECT path FROM photos ORDER BY path")]

    def needs(self, path: Path) -> bool:
        """Whether ``path`` is missing from the index or changed since it was indexed."""
        row = self.connection.execute("SELECT sha256 FROM photos WHERE path = ?", (str(path),)).fetchone()
        return row is None or row[0] != file_sha256(path)

    def add(self, path: Path, encoded: EncodedImage, dtype: Literal["float16", "float32"] = "float16") -> None:
        """Store one photo's embedding and (SAM 2) its high-resolution features (one transaction)."""
        shape, blob = _blob(encoded.embedding, dtype)
        h, w = encoded.geometry.original_hw
        extras = [(str(path), level, *_blob(f, dtype)) for level, f in enumerate(encoded.high_res_features or ())]
        with self.connection:
            self.connection.execute(
                "INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(path), file_sha256(path), h, w, dtype, shape, blob),
            )
            self.connection.execute("DELETE FROM features WHERE path = ?", (str(path),))
            self.connection.executemany("INSERT INTO features VALUES (?, ?, ?, ?)", extras)

    def encoded(self, path: str | os.PathLike, backend: Backend) -> EncodedImage:
        """The stored embedding of ``path`` as an EncodedImage on ``backend``'s device."""
        self.bind(backend)
        row = self.connection.execute(
            "SELECT height, width, dtype, shape, embedding FROM photos WHERE path = ?", (str(path),)
        ).fetchone()
        if row is None:
            raise MissingInputError(f"{path}: not in the index {self.path}; run `persam index` on it")
        h, w, dtype, shape, blob = row
        emb = _tensor(blob, dtype, shape, backend.device)
        high_res = None
        if backend.family == "sam2":
            rows = self.connection.execute(
                "SELECT shape, data FROM features WHERE path = ? ORDER BY level", (str(path),)
            ).fetchall()
            if len(rows) != 2:
                raise IncompatibleError(
                    f"{self.path}: {path} has no SAM 2 high-resolution features; build a new index with `persam index`"
                )
            high_res = tuple(_tensor(data, dtype, fshape, backend.device) for fshape, data in rows)
        return EncodedImage(embedding=emb, geometry=backend.geometry((h, w)), high_res_features=high_res)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    def close(self) -> None:
        self.connection.close()
