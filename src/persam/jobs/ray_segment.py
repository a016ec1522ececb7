"""``persam segment --index STORE --ray``: segment the photos of an embedding store as a Ray Data pipeline.

    read_parquet (the store's part files)
      -> latest_rows   tasks: keep each photo's latest row (a photo indexed again has older rows)
      -> Decoder       actor pool: each actor loads the model and the concept once (the concept file's bytes
                       are put in the object store once and shared), runs the decoder on the stored
                       embedding and writes the mask (and overlay) with ``persam.jobs.outputs.write_result``
    -> the driver collects each photo's manifest entry and COCO records; ``persam segment`` adds them to
       ``Outputs`` in input order, so ``manifest.json`` and ``annotations.json`` come from the same writer
       as the local path's.

The output folder must be one every worker can write (a local folder for a local runtime, a shared mount on a
cluster): masks are written with the local atomic writer. A photo's files are written under their final
names atomically, so a batch retried after a worker died rewrites the same files, and the driver keeps one
entry per photo.
"""

from __future__ import annotations

import json
from pathlib import Path

from persam.jobs.outputs import Done, OutputOptions
from persam.jobs.ray_common import ModelSpec, Plan, RayOptions, connect, kill_hook, plan, pool_args

_KEEP: dict = {}  # per worker process: {path: written_ns} of the rows to segment


def latest_rows(batch: dict, keep_ref: list) -> dict:
    """The rows of ``batch`` that are their photo's latest and wanted (a Ray task)."""
    import numpy as np
    import ray

    key = keep_ref[0].hex()
    if key not in _KEEP:
        _KEEP.clear()
        _KEEP[key] = ray.get(keep_ref[0])
    keep = _KEEP[key]
    mask = np.array([keep.get(str(p)) == int(ns) for p, ns in zip(batch["path"], batch["written_ns"])], dtype=bool)
    return {k: v[mask] for k, v in batch.items()}


class Decoder:
    """An actor holding the model and the concept: segments stored embeddings and writes their masks."""

    def __init__(
        self,
        spec: ModelSpec,
        concept_ref: list,
        stems_ref: list,
        root: str,
        options: OutputOptions,
        max_instances: int,
        detect_absent: bool,
        kill: str | None,
        key: str = "",
    ) -> None:
        import tempfile

        import ray

        from persam.jobs.ray_common import KillSwitch
        from persam.session.concept_file import load_concept

        self.model = spec.load()
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / "concept.persam"
            file.write_bytes(ray.get(concept_ref[0]))
            self.concept = load_concept(file, self.model)
        self.stems = ray.get(stems_ref[0])
        self.root, self.options = Path(root), options
        self.max_instances, self.detect = max_instances, detect_absent
        self.kill = KillSwitch(kill)
        self.key = key

    def __call__(self, batch: dict) -> dict:
        import traceback

        import torch

        from persam.backends import EncodedImage
        from persam.errors import PersamError
        from persam.io import decode_image
        from persam.jobs.manifest import SPEC_KEY
        from persam.jobs.outputs import write_result
        from persam.session import dispatch
        from persam.session.store import embedding_array, read_bytes

        backend = self.model.backend
        out: dict[str, list] = {"path": [], "entry": [], "coco": []}
        for i, raw in enumerate(batch["path"]):
            path = str(raw)
            self.kill.tick()
            try:
                emb = embedding_array(str(batch["dtype"][i]), str(batch["shape"][i]), batch["embedding"][i])
                hw = (int(batch["height"][i]), int(batch["width"][i]))
                encoded = EncodedImage(
                    embedding=torch.from_numpy(emb)[None].to(backend.device), geometry=backend.geometry(hw)
                )
                pixels = decode_image(read_bytes(path), path) if self.options.overlay else None
                written, results = dispatch.segment_photo(self.concept, encoded, self.max_instances, self.detect)
                done = write_result(self.root, path, Path(self.stems[path]), pixels, written, results, self.options)
                done.entry["sha256"] = str(batch["sha256"][i])
                done.entry[SPEC_KEY] = self.key
            except PersamError as exc:
                done = Done.skipped(path, exc)
            except Exception as exc:  # a bug: the photo is listed as failed (the driver logs the traceback)
                reason = f"internal error (a bug in persam, not a problem with the photo): {type(exc).__name__}: {exc}"
                entry = {"input": path, "status": "failed", "reason": reason}
                entry["traceback"] = "".join(traceback.format_exception(exc))
                done = Done(entry)
            out["path"].append(path)
            out["entry"].append(json.dumps(done.entry))
            out["coco"].append(json.dumps(done.coco))
        return out


def run_segment(
    store_uri: str,
    targets: list[tuple[str, Path]],
    concept_bytes: bytes,
    spec: ModelSpec,
    root: Path,
    options: OutputOptions,
    max_instances: int,
    detect_absent: bool,
    ray_options: RayOptions,
    key: str = "",
    results: dict[str, Done] | None = None,
) -> tuple[dict[str, Done], Plan]:
    """Segment the stored photos ``targets`` ((photo as the store names it, output stem) pairs) on Ray.

    Returns:
        ({photo: Done} for the photos the pipeline finished, the actor pool used); a photo missing
        from it was not segmented. ``results``, if given, is filled as photos finish (and returned), so
        a caller keeps what finished before the pipeline failed.
    """
    import ray

    from persam.session.store import EmbeddingStore

    store = EmbeddingStore.open(store_uri, create=False)
    latest = store.latest()
    keep = {str(p): latest[str(p)].written_ns for p, _ in targets if str(p) in latest}
    stems = {str(p): Path(s).as_posix() for p, s in targets}
    results = {} if results is None else results
    if not keep:
        return results, Plan(0, 0, 0)
    with connect(ray_options.address):
        pool = plan(ray_options)
        columns = ["path", "sha256", "height", "width", "dtype", "shape", "embedding", "written_ns"]
        # the store folder as the one path: Ray 2.60 resolves several given paths in parallel threads, which
        # fails ("cannot import name 'HTTPFileSystem'") when fsspec is installed without aiohttp
        ds = ray.data.read_parquet(store.root, filesystem=store.fs).select_columns(columns)
        ds = ds.map_batches(
            latest_rows, batch_size=pool.batch_size, num_cpus=1, fn_kwargs={"keep_ref": [ray.put(keep)]}
        )
        kwargs = {
            "spec": spec,
            "concept_ref": [ray.put(concept_bytes)],
            "stems_ref": [ray.put(stems)],
            "root": str(root),
            "options": options,
            "max_instances": max_instances,
            "detect_absent": detect_absent,
            "kill": kill_hook(),
            "key": key,
        }
        ds = ds.map_batches(Decoder, fn_constructor_kwargs=kwargs, **pool_args(pool))
        for row in ds.iter_rows():
            coco = json.loads(row["coco"])
            results[row["path"]] = Done(json.loads(row["entry"]), None if coco is None else (coco[0], coco[1]))
    return results, pool
