"""Put a checkpoint file the user downloaded into the cache: :func:`add_checkpoint`.

The file is identified first, then copied: by the SHA-256 its publisher gives
(``persam.backends.models.ModelEntry.sha256``) where there is one, else by the
key signature of its state dict (``persam.backends.families``), in which case
its SHA-256 is recorded. It is copied atomically (``persam.io.atomic``: a temp
file beside the target, renamed into place) to ``cache_dir() / entry.filename``,
the file ``resolve_checkpoint`` and ``cached_checkpoint`` look for, so later
loads of that model need no checkpoint path. A record ``<filename>.added.json``
beside it holds the model, the SHA-256, how the file was identified, where it
came from and when (UTC).

torch is imported only to read a file without a published hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from persam.backends import models
from persam.backends.checkpoints import cache_dir, load_state_dict
from persam.backends.models import ModelEntry
from persam.errors import CheckpointError, MissingInputError, OptionsError
from persam.io.atomic import OutputPathError, atomic_open, atomic_write_json
from persam.io.hashing import file_sha256

__all__ = ["AddedCheckpoint", "add_checkpoint", "added_record", "record_path"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class AddedCheckpoint:
    """A checkpoint put into the cache.

    Attributes:
        model: the model it belongs to (a ``persam.backends.models`` name).
        path: where it now is in the cache.
        sha256: its SHA-256 (hex).
        verified: "published sha256" (it is the publisher's file) or "key signature"
            (the publisher gives no hash: its keys and shapes are the model's, its hash is recorded).
        source: the file it was copied from.
        added: when, UTC, ``YYYY-MM-DDTHH:MM:SSZ``.
    """

    model: str
    path: str
    sha256: str
    verified: Literal["published sha256", "key signature"]
    source: str
    added: str


def record_path(checkpoint: Path) -> Path:
    """The record beside a cached checkpoint: ``<file name>.added.json``."""
    return checkpoint.with_name(checkpoint.name + ".added.json")


def added_record(model: str) -> AddedCheckpoint | None:
    """The record of ``model``'s checkpoint if it was added by :func:`add_checkpoint` and is still there."""
    entry = models.find(model)
    if entry is None:
        return None
    path = cache_dir() / entry.filename
    record = record_path(path)
    if not (path.is_file() and record.is_file()):
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return AddedCheckpoint(**data)
    except (OSError, ValueError, TypeError):  # an unreadable record only loses the "added" note
        return None


def _entry(model: str) -> ModelEntry:
    entry = models.find(model)
    if entry is None:
        offered = ", ".join(e.name for e in models.entries() if not e.for_tests)
        raise OptionsError(f"unknown model {model!r}; choose one of: {offered}", field="model")
    if entry.bundled_checkpoint:
        raise OptionsError(
            f"the weights of {model} ship with its Python package; there is nothing to add", field="model"
        )
    return entry


def _state(file: Path):
    try:
        return load_state_dict(file)
    except CheckpointError as exc:  # keep what is wrong, drop the advice meant for a load
        reason = exc.message.split("; ")[0]
        raise CheckpointError(f"{reason}; it was not added; download it again", path=file) from None


def _identify(file: Path, digest: str, model: str | None) -> tuple[ModelEntry, str]:
    """The entry ``file`` belongs to and how that was told, or a one-line CheckpointError."""
    from persam.backends.families import identify_checkpoint

    published = models.by_sha256(digest)
    if model is not None:
        entry = _entry(model)
        if entry.sha256 is not None:
            if digest == entry.sha256:
                return entry, "published sha256"
            other = f"; it is the published {published.name} checkpoint" if published is not None else ""
            raise CheckpointError(
                f"{file} is not the published {model} checkpoint: its SHA-256 {digest[:16]}... differs from the "
                f"publisher's {entry.sha256[:16]}...{other}; the file is damaged or of another model",
                path=file,
            )
    elif published is not None:
        return _entry(published.name), "published sha256"
    found = identify_checkpoint(_state(file))
    looks = f"it looks like {found.label}" if found is not None else "its keys match no model persam knows"
    if found is None or not found.supported or found.model_type is None:
        wanted = f"a {model} checkpoint" if model is not None else "a checkpoint of a model persam knows"
        raise CheckpointError(f"{file} is not {wanted}: {looks}", path=file)
    if model is not None and found.model_type != model:
        raise CheckpointError(f"{file} is not a {model} checkpoint: {looks} (model {found.model_type})", path=file)
    entry = _entry(found.model_type)
    if entry.sha256 is not None:  # the publisher's file would have matched its hash
        raise CheckpointError(
            f"{file} looks like {found.label} but is not the published {entry.name} checkpoint (another SHA-256); "
            "the file is damaged or modified",
            path=file,
        )
    return entry, "key signature"


def _copy(file: Path, target: Path, digest: str) -> None:
    """Copy ``file`` to ``target`` atomically; refuse if what was copied is not what was identified."""
    copied = hashlib.sha256()
    try:
        with open(file, "rb") as source, atomic_open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
                copied.update(chunk)
            if copied.hexdigest() != digest:
                raise CheckpointError(f"{file} changed while it was being copied; add it again", path=file)
    except OutputPathError as exc:
        raise CheckpointError(f"{exc}; set PERSAM_HOME to a writable folder", path=target) from None


def add_checkpoint(file: str | os.PathLike, model: str | None = None) -> AddedCheckpoint:
    """Identify ``file`` as a checkpoint of ``model`` (or of whichever model it is) and copy it into the cache.

    Args:
        file: a checkpoint file in the official layout (a SAM 1 family state dict, or SAM 2's ``{"model": ...}``).
        model: the model it must be; ``None`` tells it from the published SHA-256 or the key signature.

    Returns:
        What was added, as recorded in ``record_path(path)``.

    Raises:
        MissingInputError: ``file`` does not exist.
        OptionsError: ``model`` is unknown, or its weights ship with its package.
        CheckpointError: the file is damaged, of another model than ``model``, of no model persam knows,
            not the publisher's file where a SHA-256 is published, or the cache is not writable.
    """
    source = Path(file).expanduser()
    if not source.is_file():
        raise MissingInputError(f"checkpoint file not found: {source}", path=source)
    if model is not None:
        _entry(model)  # an unknown name is refused before the file is read
    digest = file_sha256(source)
    entry, verified = _identify(source, digest, model)
    target = cache_dir() / entry.filename
    if not (target.exists() and target.resolve() == source.resolve()):  # a file already in place is only recorded
        _copy(source, target, digest)
    added = AddedCheckpoint(
        model=entry.name,
        path=str(target),
        sha256=digest,
        verified=verified,
        source=str(source.resolve()),
        added=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    atomic_write_json(record_path(target), asdict(added))
    return added
