"""``persam bench --ray``: photos/s of indexing on the local path and on Ray with 1 and 2 workers.

Each round indexes the same synthetic photos into a new store, once per variant, in turn (interleaved, so a
slow spell of a shared machine slows every variant alike); the result keeps each variant's median:

    local            ``persam index``'s loop in this process (torch's default threads)
    local, 1 thread  the same with torch on one thread: what one CPU worker of the Ray pool computes
    ray xN           ``persam.jobs.ray_index.run_index`` with N encoder actors (1 CPU, 1 torch thread each)

Every variant's time includes loading the model and writing the store; the Ray runtime is started once
before the rounds (as a cluster is up before a job) with N+1 logical CPUs for N workers (the read and
decode tasks keep one). Ray's overhead per photo = (ray x1 - local, 1 thread) / photos: the same
arithmetic on one thread, plus the pipeline (actor start, object transfers, scheduling, Parquet writing).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from persam.jobs.ray_common import ModelSpec, RayOptions


@dataclass
class RayBenchResult:
    """Seconds per round for each variant (``times``), over ``photos`` photos of ``image_hw``."""

    model: str
    photos: int
    image_hw: tuple[int, int]
    rounds: int
    logical_cpus: int
    times: dict[str, list[float]] = field(default_factory=dict)

    def photos_per_s(self, variant: str) -> float:
        return self.photos / statistics.median(self.times[variant])

    def overhead_ms_per_photo(self) -> float:
        """Ray's overhead per photo in ms: (ray x1 - local, 1 thread) / photos, medians."""
        return (
            1000
            * (statistics.median(self.times["ray x1"]) - statistics.median(self.times["local, 1 thread"]))
            / self.photos
        )

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "photos_per_s": {v: self.photos_per_s(v) for v in self.times},
            "ray_overhead_ms_per_photo": self.overhead_ms_per_photo(),
        }


def _write_photos(folder: Path, count: int, image_size: int) -> tuple[int, int]:
    from PIL import Image

    from persam.jobs.synthetic import tiled_photo

    h, w = round(0.75 * image_size), image_size
    for i in range(count):
        Image.fromarray(tiled_photo(h, w, seed=i)[0]).save(folder / f"p{i:04d}.png")
    return h, w


def _index_local(photos: Path, store: Path, spec: ModelSpec, threads: int | None) -> float:
    """Seconds to index ``photos`` into ``store`` as ``persam index`` does without Ray."""
    import torch

    from persam.io import find_images, load_image
    from persam.session.store import EmbeddingStore

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        backend = spec.load().backend
        album = EmbeddingStore.open(store)
        album.bind(backend)
        for path, _ in find_images([photos]):
            path = path.resolve()
            if album.needs(path):
                album.add(path, backend.encode(load_image(path)), "float32")
        album.close()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def _index_ray(photos: Path, store: Path, spec: ModelSpec, workers: int) -> float:
    from persam.jobs.ray_index import run_index

    start = time.perf_counter()
    counts, _ = run_index([str(photos)], str(store), spec, "float32", RayOptions(workers=workers))
    if counts.encoded != counts.listed:
        raise RuntimeError(f"the Ray run encoded {counts.encoded} of {counts.listed} photos")
    return time.perf_counter() - start


def run_ray_bench(
    spec: ModelSpec,
    photos: int = 16,
    image_size: int = 512,
    rounds: int = 3,
    workers: tuple[int, ...] = (1, 2),
    on_stage=None,
) -> RayBenchResult:
    """Time the variants (module docstring) in ``rounds`` interleaved rounds after one warm-up round."""
    import ray

    with tempfile.TemporaryDirectory(prefix="persam-ray-bench-") as folder:
        root = Path(folder)
        (root / "photos").mkdir()
        hw = _write_photos(root / "photos", photos, image_size)
        cpus = max(workers) + 1
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
        try:
            result = RayBenchResult(spec.model, photos, hw, rounds, cpus)
            variants = {
                "local": lambda s: _index_local(root / "photos", s, spec, None),
                "local, 1 thread": lambda s: _index_local(root / "photos", s, spec, 1),
                **{f"ray x{n}": (lambda s, n=n: _index_ray(root / "photos", s, spec, n)) for n in workers},
            }
            for r in range(rounds + 1):  # round 0 warms up
                for name, variant in variants.items():
                    if on_stage is not None:
                        on_stage(f"round {r}/{rounds}: {name}")
                    seconds = variant(root / f"store-{r}-{name.replace(' ', '').replace(',', '')}")
                    if r:
                        result.times.setdefault(name, []).append(seconds)
        finally:
            ray.shutdown()
    return result


def format_ray_result(result: RayBenchResult) -> str:
    """The result as a small table."""
    h, w = result.image_hw
    lines = [
        f"persam bench --ray: {result.model}, {result.photos} photos of {w}x{h}, indexing into a float32 store, "
        f"median of {result.rounds} interleaved rounds, Ray runtime with {result.logical_cpus} logical CPUs",
        f"{'variant':<18} {'s':>8} {'photos/s':>10}",
    ]
    for name, times in result.times.items():
        lines.append(f"{name:<18} {statistics.median(times):>8.2f} {result.photos_per_s(name):>10.2f}")
    lines.append(f"Ray overhead per photo: {result.overhead_ms_per_photo():.0f} ms (ray x1 - local, 1 thread)")
    return "\n".join(lines)
