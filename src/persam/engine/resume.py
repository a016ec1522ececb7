"""The resume key: a hash of the whole job spec, so that no field can be left out of it.

``spec_record`` walks the spec's dataclass fields (recursively): a field whose metadata says
``resume=False`` is left out (each says why, in ``persam.engine.spec``); a field marked ``file`` enters by
the SHA-256 of the file's bytes (a folder by the hashes of the files in it), not its path; every other
field enters by its value. The loaded model adds what identifies its weights (backend name, checkpoint
SHA-256, precision, runtime). ``spec_key`` is the SHA-256 of that record's canonical JSON; the manifest
stores the record (readable) and the key per photo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from persam.io.hashing import file_sha256


def _file_value(path: str) -> object:
    """A file's SHA-256, or for a folder {relative path: SHA-256} of the files under it."""
    p = Path(path)
    if p.is_dir():
        return {f.relative_to(p).as_posix(): file_sha256(f) for f in sorted(p.rglob("*")) if f.is_file()}
    return file_sha256(p)


def _record(value: object, is_file: bool = False) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.metadata.get("resume", True):
                out[f.name] = _record(getattr(value, f.name), bool(f.metadata.get("file")))
        return out
    if isinstance(value, tuple | list):
        return [_record(v, is_file) for v in value]
    if is_file and value is not None:
        return _file_value(str(value))
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a job spec holds plain values only, got {type(value).__name__}")


def spec_record(spec, backend=None) -> dict:
    """The JSON-ready record of what decides the masks: ``spec`` (a ``JobSpec``) and the loaded backend."""
    record = {"spec": _record(spec)}
    if backend is not None:
        record["weights"] = {
            "model": backend.name,
            "checkpoint_sha256": backend.checkpoint_sha256,
            "precision": backend.precision,
            "runtime": backend.runtime,
        }
    return json.loads(json.dumps(record))


def spec_key(record: dict) -> str:
    """SHA-256 (hex) of ``record``'s canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
