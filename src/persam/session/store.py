"""Embedding store: the album index as a folder of Parquet files, for one machine or a cluster.

A store is a folder (local, or any filesystem pyarrow opens: ``s3://bucket/album``, ``gs://...``) holding
``store.json`` (the model that made the embeddings) and ``*.parquet`` part files. Writers only ever add
part files, never rewrite one, so any number of writers (``persam index`` on one machine, or the workers of
a Ray cluster) can add to the same store, and a reader sees whole files only (a local part file is written
under a temporary name and renamed; a part file that cannot be read is reported and left out, so its
photos are simply encoded again).

One row per photo and run (``ROW_SCHEMA``): ``path`` (the photo's absolute path or URI), ``sha256`` of its
bytes, ``status`` ("encoded" or "skipped" with its ``reason``), ``height``/``width`` of the photo, the
``embedding`` as raw bytes of ``dtype`` (float16 or float32) in C order with ``shape`` "C,h,w" (SAM:
256,64,64), ``written_ns`` (when it was made) and the writer's ``run`` id. A photo indexed again after
it changed has several rows; the latest (``written_ns``) counts.

Why Parquet: Ray Data reads and writes it natively (``read_parquet``/``write_parquet``), pyarrow reads it
from any filesystem without a server, the columns let a reader fetch paths and hashes without touching the
embeddings, and append-only part files need no locking (SQLite on a shared filesystem does).
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

META = "store.json"
FORMAT = "persam-embeddings"
VERSION = 1
#: Photos buffered by the local writer before it writes a part file (a kill loses at most these).
FLUSH_ROWS = 8
COLUMNS = ("path", "sha256", "status", "reason", "height", "width", "dtype", "shape", "embedding", "written_ns", "run")


def row_schema():
    """The pyarrow schema of a store row (see the module docstring)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("sha256", pa.string()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("dtype", pa.string()),
            ("shape", pa.string()),
            ("embedding", pa.binary()),
            ("written_ns", pa.int64()),
            ("run", pa.string()),
        ]
    )


def encoded_row(path: str, sha: str, embedding: np.ndarray, hw: tuple[int, int], dtype: str, run: str) -> dict:
    """The row of an encoded photo. ``embedding``: (C, h, w) float32; ``hw``: the photo's (H, W)."""
    emb = np.ascontiguousarray(embedding.astype(dtype))
    return {
        "path": path,
        "sha256": sha,
        "status": "encoded",
        "reason": None,
        "height": int(hw[0]),
        "width": int(hw[1]),
        "dtype": dtype,
        "shape": ",".join(map(str, emb.shape)),
        "embedding": emb.tobytes(),
        "written_ns": time.time_ns(),
        "run": run,
    }


def skipped_row(path: str, sha: str | None, reason: str, run: str) -> dict:
    """The row of a photo that could not be decoded or encoded, with the reason."""
    return {
        "path": path,
        "sha256": sha,
        "status": "skipped",
        "reason": reason,
        "height": None,
        "width": None,
        "dtype": None,
        "shape": None,
        "embedding": None,
        "written_ns": time.time_ns(),
        "run": run,
    }


def embedding_array(dtype: str, shape: str, data: bytes) -> np.ndarray:
    """The (C, h, w) float32 embedding of a stored row."""
    return np.frombuffer(data, dtype=dtype).reshape(tuple(int(s) for s in shape.split(","))).astype(np.float32)


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
    """

    uri: str
    fs: object
    root: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    dtype: str = "float16"
    _pending: list[dict] = field(default_factory=list)
    _latest: dict[str, Latest] | None = None
    _cache: tuple[str, int, object] | None = None
    unreadable: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, uri: str | os.PathLike, create: bool = True) -> EmbeddingStore:
        """Open (or create) a store folder."""
        from pyarrow import fs as pafs

        filesystem, root = resolve(uri)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise OptionsError(
                f"{uri}: a file, not an embedding store folder; choose a folder name (or an .idx file for SQLite)"
            )
        if not create and filesystem.get_file_info(f"{root}/{META}").type != pafs.FileType.File:
            raise MissingInputError(
                f"{uri}: no embedding store there (no {META}); build it with `persam index PHOTOS... -o {uri}`"
            )
        if create:
            try:
                filesystem.create_dir(root, recursive=True)
            except OSError as exc:  # pyarrow's message names the cause (a file in the way, no permission)
                raise OutputError(
                    f"{uri}: cannot create the embedding store folder ({str(exc).splitlines()[0]}); "
                    "where a part of the path is a file, or not writable, choose another output path"
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
        except ValueError:
            raise StoreError(f"{self.uri}/{META}: not a persam embedding store file; build a new store") from None
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.uri}: not a persam embedding store; build a new one with `persam index`")
        return meta

    def bind_names(self, name: str, checkpoint_sha256: str) -> None:
        """Record the model on first use; refuse another model or checkpoint later."""
        meta = self.meta()
        if meta is None:
            self._write(
                META,
                json.dumps(
                    {"format": FORMAT, "version": VERSION, "backend": name, "checkpoint_sha256": checkpoint_sha256},
                    indent=2,
                ).encode(),
            )
        elif (meta["backend"], meta["checkpoint_sha256"]) != (name, checkpoint_sha256):
            raise IncompatibleError(
                f"{self.uri}: store was built with model {meta['backend']!r} (checkpoint "
                f"{meta['checkpoint_sha256'][:12]}…); pass the same --model/--checkpoint or build a new store"
            )

    def bind(self, backend) -> None:
        """``bind_names`` with a backend's name and checkpoint hash."""
        self.bind_names(backend.name, backend.checkpoint_sha256)

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
        """{path: its latest row}, read from the small columns only (cached until the next write)."""
        import pyarrow.parquet as pq

        if self._latest is not None:
            return self._latest
        latest: dict[str, Latest] = {}
        self.unreadable = []
        for file in self.part_files():
            try:
                table = pq.read_table(
                    file, columns=["path", "sha256", "status", "written_ns", "run"], filesystem=self.fs
                )
            except (OSError, ValueError) as exc:  # a part file cut short: its photos count as not stored
                self.unreadable.append(f"{file} ({exc.__class__.__name__})")
                continue
            cols = table.to_pydict()
            rows = zip(cols["path"], cols["sha256"], cols["status"], cols["written_ns"], cols["run"])
            for i, (path, sha, status, ns, run) in enumerate(rows):
                old = latest.get(path)
                if old is None or ns >= old.written_ns:
                    latest[path] = Latest(file, i, sha, status, ns, run)
        self._latest = latest
        return latest

    def hashes(self) -> dict[str, str]:
        """{path: sha256} of the photos whose latest row is an embedding."""
        return {p: r.sha256 for p, r in self.latest().items() if r.status == "encoded"}

    def paths(self) -> list[str]:
        """Encoded photo paths, sorted."""
        return sorted(self.hashes())

    def needs(self, path: Path) -> bool:
        """Whether the local photo ``path`` is missing, skipped before, or changed since it was encoded."""
        return self.hashes().get(str(path)) != file_sha256(path)

    def reason(self, path: str) -> str | None:
        """Why the latest row of ``path`` is "skipped" (None if it is not)."""
        where = self.latest().get(str(path))
        return None if where is None or where.status != "skipped" else self.row(path, encoded=False)["reason"]

    def row(self, path: str | os.PathLike, encoded: bool = True) -> dict:
        """The latest row of ``path`` (all columns); with ``encoded``, only if it holds an embedding."""
        import pyarrow.parquet as pq

        where = self.latest().get(str(path))
        if where is None or (encoded and where.status != "encoded"):
            raise MissingInputError(f"{path}: not in the store {self.uri}; run `persam index` on it")
        if self._cache is None or self._cache[0] != where.file:
            parquet = pq.ParquetFile(where.file, filesystem=self.fs)
            starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
            self._cache = (where.file, -1, (parquet, starts, None))
        file, group, (parquet, starts, table) = self._cache
        g = int(np.searchsorted(starts, where.row, side="right") - 1)
        if g != group:
            table = parquet.read_row_group(g)
            self._cache = (file, g, (parquet, starts, table))
        return {k: v[0] for k, v in table.slice(where.row - int(starts[g]), 1).to_pydict().items()}

    def encoded(self, path: str | os.PathLike, backend):
        """The stored embedding of ``path`` as an ``EncodedImage`` on ``backend``'s device."""
        import torch

        from persam.backends import EncodedImage

        self.bind(backend)
        r = self.row(path)
        emb = torch.from_numpy(embedding_array(r["dtype"], r["shape"], r["embedding"]))[None].to(backend.device)
        return EncodedImage(embedding=emb, geometry=backend.geometry((r["height"], r["width"])))

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    # writing (the local path; Ray writes part files with ``write_parquet``) -----------------------
    def add(self, path: Path, encoded, dtype: Literal["float16", "float32"] = "float16") -> None:
        """Store one photo's embedding (written with the next part file, every ``FLUSH_ROWS`` photos)."""
        emb = encoded.embedding[0].detach().cpu().numpy()
        self.add_row(encoded_row(str(path), file_sha256(path), emb, encoded.geometry.original_hw, dtype, self.run))

    def add_row(self, row: dict) -> None:
        """Buffer one row (``encoded_row``/``skipped_row``)."""
        self._pending.append(row)
        if len(self._pending) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.Table.from_pylist(self._pending, schema=row_schema())
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=1)  # one photo per row group: a reader fetches one at a time
        self._write(f"local-{self.run}-{time.time_ns()}.parquet", sink.getvalue().to_pybytes())
        self._pending.clear()
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
        self.flush()


def open_album(path: str | os.PathLike, create: bool = True):
    """The album index at ``path``: an ``EmbeddingStore`` (folder or URI) or a SQLite ``AlbumIndex`` (``.idx`` file)."""
    if is_store(path):
        return EmbeddingStore.open(path, create=create)
    from persam.session.album import AlbumIndex

    return AlbumIndex.open(path, create=create)
