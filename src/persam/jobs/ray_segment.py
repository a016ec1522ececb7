"""``persam segment --index STORE --ray``: segment the photos of an embedding store as a Ray Data pipeline.

    from_items (each wanted photo's latest row: part file and row number, found on the driver from the
               store's small columns; a part file that cannot be read is reported by the caller)
      -> Decoder       actor pool: each actor loads the model and the concept once (the concept file's bytes
                       are put in the object store once and shared), reads the photo's row with the store's
                       own reader (``EmbeddingStore.encoded_at``: whatever arrays the model family needs;
                       a damaged row is that photo skipped, naming its part file), runs the decoder and
                       writes the mask (and overlay) with ``persam.jobs.outputs.write_result``
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
from persam.jobs.ray_common import (
    ModelSpec,
    Plan,
    RayOptions,
    bounded_retries,
    connect,
    kill_hook,
    plan,
    pool_args,
)


class Decoder:
    """An actor holding the model and the concept: segments stored embeddings and writes their masks."""

    def __init__(
        self,
        spec: ModelSpec,
        store_uri: str,
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

        from persam.backends.allocator import keep_freed_memory
        from persam.jobs.ray_common import KillSwitch
        from persam.session.concept_file import load_concept
        from persam.session.store import EmbeddingStore

        keep_freed_memory()  # this worker's process decodes many photos (persam.backends.allocator)
        self.model = spec.load()
        self.store = EmbeddingStore.open(store_uri, create=False)
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

        from persam.errors import PersamError
        from persam.io import decode_image
        from persam.jobs.manifest import SPEC_KEY
        from persam.jobs.outputs import write_result
        from persam.session import dispatch
        from persam.session.store import read_bytes

        backend = self.model.backend
        out: dict[str, list] = {"path": [], "entry": [], "coco": []}
        for i, raw in enumerate(batch["path"]):
            path = str(raw)
            self.kill.tick()
            try:
                encoded = self.store.encoded_at(str(batch["file"][i]), int(batch["row"][i]), backend)
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
        from it was not segmented (its batch failed ``BATCH_TRIES`` times and was dropped). ``results``, if
        given, is filled as photos finish (and returned), so a caller keeps what finished before the
        pipeline failed.
    """
    import ray

    from persam.session.store import EmbeddingStore

    store = EmbeddingStore.open(store_uri, create=False)
    latest = store.latest()
    items = [
        {"path": str(p), "file": latest[str(p)].file, "row": latest[str(p)].row, "sha256": latest[str(p)].sha256}
        for p, _ in targets
        if str(p) in latest and latest[str(p)].status == "encoded"
    ]
    items.sort(key=lambda item: (item["file"], item["row"]))  # each actor reads a part file's rows in order
    stems = {str(p): Path(s).as_posix() for p, s in targets}
    results = {} if results is None else results
    if not items:
        return results, Plan(0, 0, 0)
    with connect(ray_options.address), bounded_retries():
        pool = plan(ray_options)
        ds = ray.data.from_items(items)
        kwargs = {
            "spec": spec,
            "store_uri": store_uri if "://" in str(store_uri) else store.root,  # a local path: absolute
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
