"""What the Ray pipelines share: joining a cluster, sizing the actor pool, the model each actor loads.

Ray is the optional extra ``persam[ray]`` and is imported inside functions only.

Actor-pool defaults (``plan``), from the cluster's resources (``ray.cluster_resources()``):
    with GPUs:  one actor per ``gpus_per_worker`` GPUs (default 1), 1 CPU each, 8 photos per batch;
    CPU only:   one actor per CPU but one (the read and decode tasks keep a CPU: with every CPU
                held by actors Ray Data cannot schedule its read tasks and the job stalls), 4 photos per batch.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from persam.errors import OptionsError
from persam.session.model_spec import ModelSpec

#: Test hook: "K:FILE" makes an actor kill its own process (SIGKILL) before its K-th photo, once (FILE marks it done).
KILL_ENV = "PERSAM_TEST_KILL_WORKER_AT"


@dataclass(frozen=True)
class RayOptions:
    """``--ray [ADDRESS]``, ``--ray-workers``, ``--ray-gpus-per-worker``, ``--ray-batch-size`` (None: planned)."""

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class Plan:
    """The actor pool a pipeline runs with."""

    workers: int
    gpus_per_worker: float
    batch_size: int


def describe_model(spec: ModelSpec) -> tuple[str, str, object]:
    """(backend name, checkpoint sha256, preprocessing) of ``spec``, for the driver to bind the store."""
    backend = spec.load().backend
    return backend.name, backend.checkpoint_sha256, backend.preprocessing


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[None]:
    """Use the Ray runtime already started in this process, or start a local one (``address`` None; traffic
    on 127.0.0.1, no dashboard), or join the cluster at ``address`` (``auto``, ``ray://host:10001``).
    A runtime started here is shut down on exit.

    ``address="local"``: a plain ``ray.init()`` joins the cluster that ``ray start`` recorded in Ray's temporary
    folder (``ray_current_cluster``), and waits on a dead one when that record is stale; ``--ray`` alone
    promises a runtime of its own (tests/test_ray_runtime.py)."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def plan(options: RayOptions) -> Plan:
    """The actor pool for ``options`` on the connected cluster (module docstring)."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0)
    if options.gpus_per_worker is not None:
        per = options.gpus_per_worker
    else:
        per = 1.0 if gpus >= 1 else 0.0
    if per > gpus:
        raise OptionsError(f"--ray-gpus-per-worker {per:g}: the Ray cluster has {gpus:g} GPUs; pass 0 for CPU workers")
    if options.workers is not None:
        workers = options.workers
    elif per > 0:
        workers = max(1, int(gpus // per))
    else:
        workers = max(1, cpus - 1)
    if per == 0 and workers >= cpus and cpus > 1:
        raise OptionsError(
            f"--ray-workers {workers}: the Ray cluster has {cpus} CPUs and CPU workers take one each; "
            f"leave at least one for reading and decoding (at most {cpus - 1})"
        )
    batch = options.batch_size or (8 if per > 0 else 4)
    return Plan(workers, per, batch)


#: Tries of one batch on the actor pool: a batch whose actor died is retried on a restarted actor, at
#: most this many times in all (Ray Data's default, ``max_task_retries=-1``, retries it without end, so a
#: photo that kills every worker it reaches, out of memory or in native code, would hang the run).
BATCH_TRIES = 3
#: Why a photo of a dropped batch was not done (``bounded_retries``), for the one line each front end prints.
DROPPED = (
    f"its Ray batch failed {BATCH_TRIES} times (a worker that died: out of memory or a crash in native code; "
    "Ray's log above says more); re-run to try it again"
)


def pool_args(p: Plan) -> dict:
    """``map_batches`` arguments for an actor pool of ``p``: an actor whose process died is restarted
    (``max_restarts=-1``) and its batch retried on the new actor, up to ``BATCH_TRIES`` tries in all; a
    batch's output is kept only once it completes (tests/test_ray_faults.py kills one actor once, and one
    photo's actor every time)."""
    import ray

    # Ray 2.60 warns that such ``ray_remote_args`` go in 2.64 but names no parameter for them yet (the extra
    # pins ray below 2.64); ``bounded_retries`` silences that one warning.
    return {
        "compute": ray.data.ActorPoolStrategy(size=p.workers),
        "batch_size": p.batch_size,
        "num_cpus": 1,
        "num_gpus": p.gpus_per_worker,
        "max_restarts": -1,
        "max_task_retries": BATCH_TRIES - 1,
    }


@contextlib.contextmanager
def bounded_retries() -> Iterator[None]:
    """Datasets made inside drop a batch that failed every try (``BATCH_TRIES``) and go on with the others
    (Ray Data's ``max_errored_blocks=-1``; its default, 0, aborts the whole run on the first): the caller
    reports the photos that never came back (``persam segment --ray``: not run; ``persam index --ray``:
    failed). Ray Data logs each dropped batch's error. Ray's deprecation warning for ``pool_args``' retry
    bounds is silenced meanwhile."""
    import warnings

    import ray

    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks
    context.max_errored_blocks = -1  # read when a dataset is made (its copy of the context)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            yield
    finally:
        context.max_errored_blocks = saved


def kill_hook() -> str | None:
    """The test hook's setting (``KILL_ENV``), read on the driver and handed to the actors."""
    return os.environ.get(KILL_ENV) or None


class KillSwitch:
    """Counts an actor's photos and, with the test hook set, kills the process once at the K-th."""

    def __init__(self, setting: str | None) -> None:
        self.count = 0
        self.at, self.marker = (None, None)
        if setting:
            at, marker = setting.split(":", 1)
            self.at, self.marker = int(at), Path(marker)

    def tick(self) -> None:
        self.count += 1
        if self.at is not None and self.count == self.at:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
