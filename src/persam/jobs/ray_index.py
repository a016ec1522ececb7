"""``persam index --ray``: encode photos into an embedding store as a Ray Data pipeline.

    from_items (the photo paths or URIs, listed on the driver)
      -> decode_batch   tasks: read each photo's bytes (pyarrow filesystems: local, s3://, gs://, ...);
                        SHA-256 of the bytes; photos stored with the same hash are dropped (resume);
                        decode and shrink to the encoder's input (``Preprocessing.shrink``: what encodes
                        exactly as the photo; a photo that cannot be read or decoded becomes a "skipped"
                        row with its reason)
      -> Encoder        actor pool, one model per actor (one GPU each on a GPU cluster)
      -> write_parquet  new part files in the store (``persam.session.store``), rows encoded as every
                        store's (``persam.session.rows``): whatever named arrays the model's images have

Failures: a read and decode task whose worker died is retried, and an encoder actor whose process dies is
restarted and its batch retried, up to ``ray_common.BATCH_TRIES`` tries in all (tests/test_ray_faults.py
kills one); a batch that failed every try is dropped and its photos counted failed
(``ray_common.bounded_retries``); rows reach the store only through completed write tasks, so
nothing is stored twice. The counts (encoded now, unchanged, skipped,
failed) are read back from the store afterwards, so they count what was stored, not what was attempted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from persam.errors import InputError, MissingInputError, PersamError
from persam.jobs.ray_common import (
    BATCH_TRIES,
    ModelSpec,
    Plan,
    RayOptions,
    bounded_retries,
    connect,
    describe_model,
    kill_hook,
    plan,
    pool_args,
)

_KNOWN: dict = {}  # per worker process: the stored hashes, fetched once per run


@dataclass(frozen=True)
class IndexCounts:
    """What one run did to the store, per listed photo."""

    listed: int
    encoded: int
    unchanged: int
    skipped: int
    failed: int
    stored: int
    skipped_reasons: tuple[tuple[str, str], ...] = ()
    damaged: tuple[tuple[str, str], ...] = ()
    #: the photos counted ``failed`` (not stored: their batch failed every try and was dropped)
    failed_paths: tuple[str, ...] = ()


def list_photos(inputs: list[str]) -> list[str]:
    """Photo files under ``inputs`` (files or folders, searched recursively): absolute local paths, or URIs
    (``s3://...``) listed with pyarrow's filesystems. In input order, each once."""
    from pyarrow import fs as pafs

    from persam.io import IMAGE_EXTENSIONS, find_images

    found: list[str] = []
    for item in inputs:
        if "://" not in item:
            found += [str(path.resolve()) for path, _ in find_images([item])]
            continue
        filesystem, root = pafs.FileSystem.from_uri(item)
        scheme = item.split("://", 1)[0]
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            infos = [info]
        elif info.type == pafs.FileType.Directory:
            infos = sorted(filesystem.get_file_info(pafs.FileSelector(root, recursive=True)), key=lambda i: i.path)
        else:
            raise MissingInputError(f"{item}: no such file or folder; check the URI")
        found += [
            f"{scheme}://{i.path}"
            for i in infos
            if i.type == pafs.FileType.File and Path(i.path).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return list(dict.fromkeys(found))


def decode_batch(batch: dict, known_ref: list, run: str, preprocessing) -> dict:
    """Read, hash, skip the unchanged, decode and resize one batch of ``{"path"}`` rows (a Ray task)."""
    import ray

    from persam.io import bytes_sha256, decode_image
    from persam.session.store import read_bytes

    key = known_ref[0].hex()
    if key not in _KNOWN:
        _KNOWN.clear()
        _KNOWN[key] = ray.get(known_ref[0])
    known = _KNOWN[key]
    out: dict[str, list] = {
        k: [] for k in ("path", "sha256", "status", "reason", "height", "width", "pixels", "rh", "rw")
    }
    for raw_path in batch["path"]:
        path = str(raw_path)
        try:
            data = read_bytes(path)
        except OSError as exc:
            data, failure = None, f"{path}: cannot be read ({exc}); check the path and its permissions"
        sha = None if data is None else bytes_sha256(data)
        if sha is not None and known.get(path) == sha:
            continue
        try:
            if data is None:
                raise InputError(failure, path=path)
            image = decode_image(data, path)
            resized = preprocessing.shrink(image)
            row = ("todo", None, *image.shape[:2], resized.tobytes(), *resized.shape[:2])
        except PersamError as exc:
            row = ("skipped", str(exc), 0, 0, b"", 0, 0)
        for k, v in zip(out, (path, sha, *row)):
            out[k].append(v)
    return out


class Encoder:
    """An actor holding one model: encodes the decoded photos of a batch into store rows."""

    def __init__(self, spec: ModelSpec, dtype: str, run: str, kill: str | None) -> None:
        from persam.backends.allocator import keep_freed_memory
        from persam.jobs.ray_common import KillSwitch

        keep_freed_memory()  # this worker's process encodes many photos (persam.backends.allocator)
        self.backend = spec.load().backend
        self.dtype, self.run, self.kill = dtype, run, KillSwitch(kill)

    def __call__(self, batch: dict):
        import numpy as np

        from persam.errors import PersamError
        from persam.session.rows import Row
        from persam.session.store import table_of

        rows = []
        for i, path in enumerate(batch["path"]):
            path, sha = str(path), batch["sha256"][i]
            sha = None if sha is None else str(sha)
            if batch["status"][i] == "skipped":
                rows.append(Row.skipped(path, sha, str(batch["reason"][i]), self.run))
                continue
            self.kill.tick()
            resized = np.frombuffer(batch["pixels"][i], np.uint8).reshape(int(batch["rh"][i]), int(batch["rw"][i]), 3)
            hw = (int(batch["height"][i]), int(batch["width"][i]))
            try:  # the shrunk photo encodes exactly as the photo (``Preprocessing.shrink``)
                arrays = self.backend.encode(resized).arrays()
            except PersamError as exc:
                rows.append(Row.skipped(path, sha, str(exc), self.run))
                continue
            rows.append(Row.encoded(path, sha, arrays, hw, self.dtype, self.run))
        return table_of(rows)


def run_index(
    inputs: list[str], store_uri: str, spec: ModelSpec, dtype: str, options: RayOptions
) -> tuple[IndexCounts, Plan]:
    """Index ``inputs`` into the store at ``store_uri`` on Ray; returns the counts and the pool used.

    Raises:
        InputError: no photos. IncompatibleError: a store of another model. StoreError: a store of an older
            persam (a damaged part file is listed in the counts' ``damaged`` instead).
    """
    import uuid

    import ray

    from persam.session.store import WRITE_OPTIONS, EmbeddingStore, resolve

    files = list_photos(inputs)
    if not files:
        raise InputError("no image files among the photos; pass .jpg/.png files or folders holding them")
    store = EmbeddingStore.open(store_uri)
    with connect(options.address), bounded_retries():
        name, sha, preprocessing = ray.get(ray.remote(num_cpus=1)(describe_model).remote(spec))
        store.bind_names(name, sha)
        known = store.hashes()
        damaged = tuple(store.damaged())
        pool = plan(options)
        run = uuid.uuid4().hex
        filesystem, root = resolve(store_uri)
        # our own reads, not read_binary_files: Ray 2.60 resolves many given paths in parallel threads, which
        # fails ("cannot import name 'HTTPFileSystem'") when fsspec is installed without aiohttp
        ds = ray.data.from_items([{"path": f} for f in files])
        ds = ds.map_batches(
            decode_batch,
            batch_size=pool.batch_size,
            num_cpus=1,
            max_retries=BATCH_TRIES - 1,
            fn_kwargs={"known_ref": [ray.put(known)], "run": run, "preprocessing": preprocessing},
        )
        ds = ds.map_batches(
            Encoder,
            fn_constructor_kwargs={"spec": spec, "dtype": dtype, "run": run, "kill": kill_hook()},
            **pool_args(pool),
        )
        try:
            ds.write_parquet(root, filesystem=filesystem, **WRITE_OPTIONS)
        finally:
            counts = count_run(EmbeddingStore.open(store_uri), files, known, run)
    return replace(counts, damaged=damaged), pool


def count_run(store, files: list[str], known: dict[str, str], run: str) -> IndexCounts:
    """The counts of run ``run`` over the listed ``files``, read back from the store."""
    latest = store.latest()
    encoded = unchanged = skipped = 0
    reasons, failed = [], []
    for f in files:
        r = latest.get(f)
        if r is not None and r.run == run:
            if r.status == "encoded":
                encoded += 1
            else:
                skipped += 1
                reasons.append(f)
        elif r is not None and r.status == "encoded" and known.get(f) == r.sha256:
            unchanged += 1
        else:
            failed.append(f)
    if reasons:
        reasons = [(f, store.reason(f)) for f in reasons]
    stored = len(store.hashes())
    return IndexCounts(
        len(files), encoded, unchanged, skipped, len(failed), stored, tuple(reasons), failed_paths=tuple(failed)
    )
