"""Find, download, verify and load Segment Anything checkpoint files.

:func:`resolve_checkpoint` returns the user's ``--checkpoint PATH`` or a known
checkpoint downloaded once into :func:`cache_dir`. Downloads stream into a
temporary file beside the target, are hashed on the way, verified, and only
then moved into place, so a cut or bad download never looks complete. Nothing
runs at import time; ``torch`` is imported only by :func:`load_state_dict`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import platformdirs
from tqdm import tqdm

from persam.errors import CheckpointError, MissingInputError
from persam.io.atomic import OutputPathError, atomic_open
from persam.io.hashing import file_sha256

if TYPE_CHECKING:
    import torch

    #: Checkpoints persam can download by itself, keyed by model type: a new dict built from the model
    #: table on each ``checkpoints.KNOWN_CHECKPOINTS`` access (``from ... import`` takes a snapshot).
    KNOWN_CHECKPOINTS: dict[str, CheckpointInfo]

__all__ = [
    "KNOWN_CHECKPOINTS",
    "CheckpointError",
    "CheckpointInfo",
    "cache_dir",
    "cached_checkpoint",
    "download_checkpoint",
    "checkpoint_sha256",
    "file_sha256",
    "load_state_dict",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

#: Seconds to wait for a server to connect or send more data.
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20  # 1 MiB


@dataclass(frozen=True)
class CheckpointInfo:
    """Where to get a published checkpoint and how to check it.

    Attributes:
        model_type: Model type the weights belong to, e.g. ``"vit_h"``.
        url: Download address.
        sha256: Expected SHA-256 hex digest, or ``None`` when none is published
            (the file is then accepted and its hash only logged).
        filename: File name inside the cache folder.
    """

    model_type: str
    url: str
    sha256: str | None
    filename: str


def known_checkpoint(model_type: str) -> CheckpointInfo | None:
    """The published checkpoint of ``model_type`` (from its ``persam.backends.models`` entry), or None."""
    from persam.backends.models import find

    entry = find(model_type)
    if entry is None or entry.url is None:
        return None
    return CheckpointInfo(entry.name, entry.url, entry.sha256, entry.filename)


def __getattr__(name: str) -> Any:
    if name == "KNOWN_CHECKPOINTS":  # checkpoints persam can download by itself, keyed by model type
        from persam.backends.models import entries

        return {e.name: info for e in entries() if (info := known_checkpoint(e.name)) is not None}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _hint(model_type: str = "TYPE") -> str:
    return f"download the file by hand and pass --checkpoint PATH --model {model_type}"


def _brief(exc: BaseException, limit: int = 160) -> str:
    """Return ``Type: first line of message``, shortened, for error messages."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def cache_dir() -> Path:
    """Return the folder that holds downloaded checkpoints (not created here).

    Returns:
        ``$PERSAM_HOME/checkpoints`` when ``PERSAM_HOME`` is set, otherwise
        ``<user cache dir>/persam/checkpoints`` as given by ``platformdirs``.
    """
    home = os.environ.get("PERSAM_HOME")
    if home:
        return Path(home).expanduser() / "checkpoints"
    return Path(platformdirs.user_cache_dir("persam")) / "checkpoints"


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a weights file, remembered in ``cache_dir() / "hashes"`` while the file stays as it
    was (``persam.io.hash_memo``: same device, inode, size and times), so a large checkpoint is not read
    again on every command.

    Raises:
        MissingInputError / InputError: the file is missing or cannot be read.
    """
    from persam.io.hash_memo import remembered_sha256

    return remembered_sha256(path, cache_dir() / "hashes")


def cached_checkpoint(model_type: str) -> Path | None:
    """Return the cached checkpoint file of ``model_type`` if present (its hash is not checked).

    The file is the one a download left, or one ``persam.backends.checkpoint_cache.add_checkpoint`` put
    there (``cache_dir() / entry.filename``, see ``persam.backends.models.ModelEntry.filename``).
    """
    from persam.backends.models import find

    entry = find(model_type)
    if entry is None or entry.bundled_checkpoint:
        return None
    path = cache_dir() / entry.filename
    return path if path.is_file() else None


def _url_env_var(model_type: str) -> str:
    return "PERSAM_CHECKPOINT_URL_" + re.sub(r"[^A-Z0-9]", "_", model_type.upper())


def _fetch(source: str, out: BinaryIO, info: CheckpointInfo, progress: bool) -> str:
    """Stream ``source`` into ``out`` and return the SHA-256 of what was received."""
    hint = _hint(info.model_type)
    try:
        response = urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(
            f"could not download {source}: the server answered HTTP {exc.code} {exc.reason}; check the URL, or {hint}"
        ) from exc
    except (urllib.error.URLError, OSError, HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or _brief(exc)
        raise CheckpointError(
            f"could not reach the host for {source} ({reason}); check the network or proxy, or {hint}"
        ) from exc
    digest, received = hashlib.sha256(), 0
    with response:
        header = response.headers.get("Content-Length", "")
        expected = int(header) if header.strip().isdigit() else None
        with tqdm(
            total=expected,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=info.filename,
            disable=not progress,
            file=sys.stderr,
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, HTTPException, ValueError) as exc:
                    raise CheckpointError(
                        f"download of {source} was interrupted after {received} bytes "
                        f"({_brief(exc)}); try again, or {hint}"
                    ) from exc
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise CheckpointError(
                        f"could not save the download of {source} ({_brief(exc)}); "
                        f"free disk space or set PERSAM_HOME to another folder, "
                        f"or {hint}"
                    ) from exc
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise CheckpointError(
            f"download of {source} was interrupted: got {received} of {expected} bytes; try again, or {hint}"
        )
    return digest.hexdigest()


def download_checkpoint(
    info: CheckpointInfo, *, cache: Path | None = None, progress: bool | None = None, url: str | None = None
) -> Path:
    """Return the cached checkpoint file, downloading and verifying it first if needed.

    A cached file is reused when its SHA-256 matches (or when no hash is
    published); a cached file with a wrong hash is downloaded again.

    Args:
        info: The checkpoint to fetch.
        cache: Folder to keep it in; defaults to :func:`cache_dir`.
        progress: Show a progress bar; ``None`` shows one only when stderr is a terminal.
        url: Address to download from (``http(s)://`` or ``file://``). Defaults to
            ``$PERSAM_CHECKPOINT_URL_<TYPE>`` (e.g. ``PERSAM_CHECKPOINT_URL_VIT_T``)
            when set, else ``info.url``.

    Returns:
        Path of the verified file in the cache folder.

    Raises:
        CheckpointError: The host was unreachable, the download was cut short,
            the hash did not match, or the cache folder is not writable.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / info.filename
    if target.is_file():
        if info.sha256 is None or checkpoint_sha256(target) == info.sha256:
            return target
        logger.warning("cached checkpoint %s has the wrong SHA-256; downloading it again", target)
    source = url or os.environ.get(_url_env_var(info.model_type)) or info.url
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        with atomic_open(target, "wb") as out:
            digest = _fetch(source, out, info, progress)
            if info.sha256 is not None and digest != info.sha256:
                raise CheckpointError(
                    f"SHA-256 mismatch for {source}: expected {info.sha256}, got {digest}; "
                    f"the download is damaged or the mirror serves another file; try "
                    f"again, or {_hint(info.model_type)}"
                )
    except OutputPathError as exc:
        raise CheckpointError(f"{exc}, or set PERSAM_HOME to a writable folder, or {_hint(info.model_type)}") from None
    if info.sha256 is None:
        logger.info("no published SHA-256 for %s; downloaded file has SHA-256 %s", source, digest)
    return target


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a checkpoint's state dict onto the CPU, without running pickled code.

    A top-level ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is removed.

    Args:
        path: The checkpoint file.

    Returns:
        Mapping of parameter names to tensors.

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        CheckpointError: The file is not a PyTorch checkpoint, is damaged, or
            does not hold a dict of tensors.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise MissingInputError(f"checkpoint file not found: {file}; check its path", path=file, field="checkpoint")
    fix = "download it again or pass another file with --checkpoint PATH --model TYPE"
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file} is not a PyTorch checkpoint or is damaged ({_brief(exc)}); {fix}") from exc
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        what = "an empty dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{file} holds {what}, not a state dict of tensors; {fix}")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(
            f"{file} is not a plain state dict: entry {bad!r} is a {type(obj[bad]).__name__}, not a tensor; {fix}"
        )
    return dict(obj)


def resolve_checkpoint(
    model_type: str, checkpoint: str | os.PathLike[str] | None, *, progress: bool | None = None
) -> Path:
    """Return the checkpoint file to build ``model_type`` from.

    Args:
        model_type: Model type, e.g. ``"vit_b"``.
        checkpoint: The user's ``--checkpoint`` file, or ``None`` to use (and if
            needed download) the known checkpoint for ``model_type``.
        progress: Passed to :func:`download_checkpoint`.

    Returns:
        Path of an existing checkpoint file.

    A model without a known download uses its file in the cache when one was added there
    (``persam.backends.checkpoint_cache.add_checkpoint``).

    Raises:
        FileNotFoundError: ``checkpoint`` was given but is not an existing file.
        CheckpointError: No download is known for ``model_type`` and none was added, or the download failed.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MissingInputError(f"checkpoint file not found: {path}; check its path", path=path, field="checkpoint")
        return path
    info = known_checkpoint(model_type)
    if info is None:
        cached = cached_checkpoint(model_type)
        if cached is not None:  # a file added to the cache by hand
            return cached
        from persam.backends.models import entries

        known = ", ".join(sorted(e.name for e in entries() if e.url is not None))
        raise CheckpointError(
            f"no known download for model type {model_type!r} (known: {known}) and no checkpoint of it in the "
            f"cache {cache_dir()}; pass --checkpoint PATH --model {model_type}, or add the file to the cache",
            field="checkpoint",
        )
    return download_checkpoint(info, progress=progress)
