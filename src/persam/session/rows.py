"""The one row encoding of every album store: the SQLite ``.idx`` file and the Parquet folder, local and Ray.

A stored photo is one ``Row``: its ``path`` (absolute path or URI), the ``sha256`` of its bytes, ``status``
("encoded", or "skipped" with its ``reason``), the photo's ``height``/``width``, ``arrays`` (the encoded
image's named arrays in one blob, below), ``written_ns`` (when it was made) and the writer's ``run`` id.

The ``arrays`` blob (``pack_arrays`` / ``unpack_arrays``)::

    b"PSAR" | header length (uint32, little-endian) | header (UTF-8 JSON) | the arrays' bytes, one after another

with the header ``{"version": 1, "crc32": CRC of the arrays' bytes, "arrays": [{"name", "dtype", "shape"}]}``:
each array in C order, of dtype float16 or float32, with its batch axis (SAM: ``embedding`` (1, 256, 64, 64);
SAM 2 adds ``high_res_0`` and ``high_res_1``, ``persam.backends.base.EncodedImage.arrays``). The names are the
backend's: a store writes and reads whatever arrays an image has. The CRC makes a damaged blob an error
(``StoreError``) rather than a wrong mask.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from persam.errors import StoreError

MAGIC = b"PSAR"
VERSION = 1
DTYPES = ("float16", "float32")
Dtype = Literal["float16", "float32"]


@dataclass(frozen=True)
class Row:
    """One stored photo (module docstring). ``arrays`` is None for a skipped photo."""

    path: str
    sha256: str | None
    status: Literal["encoded", "skipped"]
    reason: str | None
    height: int | None
    width: int | None
    arrays: bytes | None
    written_ns: int
    run: str

    @classmethod
    def encoded(cls, path: str, sha256: str, arrays: dict, hw: tuple[int, int], dtype: Dtype, run: str) -> Row:
        """The row of an encoded photo. ``arrays``: {name: tensor or array} (``EncodedImage.arrays``);
        ``hw``: the photo's (H, W)."""
        blob = pack_arrays(arrays, dtype)
        return cls(str(path), sha256, "encoded", None, int(hw[0]), int(hw[1]), blob, time.time_ns(), run)

    @classmethod
    def skipped(cls, path: str, sha256: str | None, reason: str, run: str) -> Row:
        """The row of a photo that could not be read or encoded, with the one-line reason."""
        return cls(str(path), sha256, "skipped", reason, None, None, None, time.time_ns(), run)

    def as_dict(self) -> dict:
        """{column: value}, the columns in ``COLUMNS`` order."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS = tuple(Row.__dataclass_fields__)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def pack_arrays(arrays: dict, dtype: Dtype) -> bytes:
    """One blob holding ``arrays`` ({name: tensor or array}) as ``dtype`` (module docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: not one of {DTYPES}")  # the front ends offer only these
    parts, described = [], []
    for name, value in arrays.items():
        data = np.ascontiguousarray(_numpy(value).astype(dtype, copy=False))
        parts.append(data.tobytes())
        described.append({"name": name, "dtype": dtype, "shape": list(data.shape)})
    payload = b"".join(parts)
    header = json.dumps({"version": VERSION, "crc32": zlib.crc32(payload), "arrays": described}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + payload


def unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """{name: float32 array} of a ``pack_arrays`` blob (writable copies).

    Raises:
        persam.errors.StoreError: the blob is not one, or it was damaged (its CRC differs); the message
            says what is wrong and the caller puts the store's name in front (``StoreError.reworded``).
    """
    blob = bytes(blob)
    try:
        if blob[:4] != MAGIC:
            raise ValueError("no header")
        (size,) = struct.unpack("<I", blob[4:8])
        header = json.loads(blob[8 : 8 + size].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("its header is not an object")
        payload = memoryview(blob)[8 + size :]
        if header.get("version") != VERSION:
            raise ValueError(f"row version {header.get('version')!r}")
        if zlib.crc32(payload) != header["crc32"]:
            raise ValueError("its checksum differs")
        out, offset = {}, 0
        for item in header["arrays"]:
            dtype, shape = np.dtype(item["dtype"]), tuple(int(s) for s in item["shape"])
            size = int(np.prod(shape)) * dtype.itemsize
            out[str(item["name"])] = np.frombuffer(payload[offset : offset + size], dtype).reshape(shape)
            offset += size
        if offset != len(payload):
            raise ValueError("its length differs")
    except (ValueError, KeyError, TypeError, struct.error) as exc:  # the parsing of a stored blob only
        raise StoreError(f"damaged entry ({exc})") from None
    return {name: a.astype(np.float32) for name, a in out.items()}
