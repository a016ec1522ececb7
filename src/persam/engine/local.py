"""The in-process executor: photos read here, segmented ``workers`` groups at a time in threads, written behind.

Photos are read (or their stored embedding fetched) in input order by the caller's thread and gathered
into groups of ``batch`` (``persam.engine.batches``); a thread pool segments each group at once (the
decoder batched across its photos) and a writer thread writes each photo's files behind it; results
are recorded in input order, with at most ``2 x workers x batch`` photos ahead (``ahead``: the bound of
the photos held in memory, about 7 MiB each for a 1024-px photo with SAM's fp32 embedding). torch's
threads are shared out among the workers meanwhile. Matrix products summed over a different number of
threads, or over a group of photos instead of one, round differently, so scores may differ from a
one-worker, one-photo run in the last digits (masks agree to IoU >= 0.999, scores within 1e-4).

A photo the user can fix (``PersamError``) is listed as skipped with the reason; any other exception is a
bug: the photo is listed as failed, its traceback kept, and the others still written. On Ctrl-C
(``persam.engine.interrupt``) or an unexpected error the photos already finished are recorded, in order,
before the manifest is written a last time with ``"complete": false``; after a second Ctrl-C a photo
still being computed is not written.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from persam.engine.batches import Batcher, Finish, default_batch
from persam.engine.interrupt import Stopped, stop_on_ctrl_c
from persam.engine.job import Job, JobResult, Source, failed
from persam.errors import PersamError
from persam.jobs.manifest import SPEC_KEY, Pacer
from persam.jobs.outputs import Done

Item = tuple[Future | None, Done | None]


def default_workers(device) -> int:
    """Photos segmented at once: two on a CPU with at least two cores (the decoder's small matrix products
    use two cores poorly; two photos at a time do better), else one."""
    return 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


class _Pool(ThreadPoolExecutor):
    """A thread pool that knows its futures not yet done (``running``)."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.running: set[Future] = set()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = super().submit(fn, *args, **kwargs)
        self.running.add(future)
        future.add_done_callback(self.running.discard)
        return future


@contextlib.contextmanager
def worker_threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` threads; torch's threads are shared out among them meanwhile. On an error or
    Ctrl-C, photos not started are cancelled and those running are waited for, also through a further
    Ctrl-C: a thread cannot be stopped, and one left inside torch when the interpreter exits aborts the
    process (after a second Ctrl-C the photo it computes is not written)."""
    import torch

    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(max(1, threads // workers))
    pool = _Pool(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _wait_through_ctrl_c(pool)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        torch.set_num_threads(threads)


def _wait_through_ctrl_c(pool: _Pool) -> None:
    """Wait for ``pool``'s running futures and threads, also through a further Ctrl-C (on the futures:
    a thread join that Ctrl-C interrupts marks a running thread ended)."""
    while True:
        try:
            wait(list(pool.running))
            pool.shutdown(wait=True)
            return
        except KeyboardInterrupt:
            continue


def ahead(workers: int, batch: int) -> int:
    """Photos read ahead of the one being recorded: two groups per worker (each group needs all of its
    photos read before it starts). The bound of the photos held at once (pixels and embeddings)."""
    return 2 * workers * batch


@contextlib.contextmanager
def writer_threads(writers: int = 1) -> Iterator[ThreadPoolExecutor]:
    """The pool that writes segmented photos' files behind the workers. Entered before the workers' pool,
    it closes after it: on an error or Ctrl-C every photo segmented by then is still written (and
    recorded), as a photo being segmented is finished."""
    pool = _Pool(max_workers=writers)
    try:
        yield pool
    finally:
        _wait_through_ctrl_c(pool)


def _ordered(items: Iterator[Item], ahead: int, window: deque) -> Iterator[Item]:
    """``items`` in order, with at most ``ahead`` submitted before they are consumed (held in ``window``,
    which the caller reads after an interruption)."""
    for item in items:
        window.append(item)
        if len(window) > ahead:
            yield window.popleft()
    while window:
        yield window.popleft()


def _finished(item: Item) -> bool:
    future = item[0]
    return future is None or (future.done() and not future.cancelled() and future.exception() is None)


def _result(item: Item) -> Done:
    future, done = item
    return done if future is None else future.result()


def run_local(job: Job) -> JobResult:
    """Segment ``job``'s photos in this process; returns what was done (the manifest is written)."""
    from persam.io import load_image
    from persam.io.hashing import file_sha256
    from persam.jobs.outputs import write_result
    from persam.session import dispatch

    spec, album, outputs = job.spec, job.album, job.outputs
    method = spec.method
    model = job.concept.model
    workers = spec.executor.workers or default_workers(model.backend.device)
    batch = spec.executor.batch or default_batch(model.backend.device)
    stop, now = threading.Event(), threading.Event()
    reused = 0
    pacer = Pacer(lambda: job.save(complete=False))

    def listed(source: Source, exc: Exception) -> Done:
        if isinstance(exc, PersamError):
            return Done.skipped(source.name, exc)
        done, text = failed(source.name, exc)  # a bug: the photo is listed as failed, the batch goes on
        job.tracebacks.append(text)
        return done

    def writing(source: Source, pixels, sha: str | None, found) -> Finish:
        def finish() -> Done:
            if now.is_set():  # a second Ctrl-C: nothing more is written
                raise Stopped
            try:
                done = write_result(outputs.root, source.name, source.stem, pixels, *found, outputs.options)
            except Exception as exc:
                return listed(source, exc)
            done.entry["sha256"] = sha
            done.entry[SPEC_KEY] = job.key
            return done

        return finish

    def segment(group: Sequence[tuple]) -> list[Finish]:
        """A group's photos decoded together; if a photo's own error stops the group, each photo alone."""
        if stop.is_set():
            raise Stopped
        images = [image for _, _, image, _ in group]
        options = (method.max_instances, method.absent)
        try:
            if len(images) == 1:
                found = [dispatch.segment_photo(job.concept, images[0], *options)]
            else:
                found = dispatch.segment_photos(job.concept, images, *options)
        except Exception as exc:
            if len(group) > 1:
                return [finish for one in group for finish in segment([one])]
            done = listed(group[0][0], exc)
            return [lambda: done]
        return [writing(source, pixels, sha, f) for (source, pixels, _, sha), f in zip(group, found)]

    def submitted(batcher: Batcher) -> Iterator[Item]:
        nonlocal reused
        for source in job.sources:
            if stop.is_set():
                break  # the group gathered so far still starts (and stops at once: its photos say Stopped)
            try:
                # indexed photos need only their embedding: their bytes are hashed when they are at hand
                sha = file_sha256(source.path) if album is None or source.path.is_file() else None
                if (before := job.reusable(source, sha)) is not None:
                    reused += 1
                    yield None, before
                    continue
                if album is not None:
                    pixels = load_image(source.path) if spec.output.overlay else None
                    image = album.encoded(source.path, model.backend)
                else:
                    pixels = image = load_image(source.path)
            except PersamError as exc:  # named as the user knows the photo (an upload's own name)
                yield None, Done.skipped(source.name, exc.reworded(str(exc).replace(str(source.path), source.name)))
                continue
            except Exception as exc:  # a bug while reading: that photo fails, the batch goes on
                done, text = failed(source.name, exc)
                job.tracebacks.append(text)
                yield None, done
                continue
            yield batcher.add(source, pixels, image, sha), None
        batcher.flush()

    def add(done: Done) -> None:
        status = done.entry["status"]
        if status != "written":
            job.warn(f"{status} {done.entry['input']}: {done.entry['reason']}")
        outputs.add(done)
        pacer(now=False)

    window: deque = deque()
    current: list[Item] = []  # the item being waited for, while it is
    try:
        with stop_on_ctrl_c(stop, now), writer_threads() as writers, worker_threads(workers) as pool:
            batcher = Batcher(pool, writers, segment, batch)
            items = _ordered(submitted(batcher), ahead(workers, batch), window)
            for item in job.progress(items, len(job.sources), "segment"):
                current[:] = [item]
                done = _result(item)
                current.clear()
                add(done)
                if stop.is_set():
                    raise KeyboardInterrupt
    except BaseException:  # Ctrl-C or an unexpected error: record what finished, in order
        for item in [*current, *window]:
            if not _finished(item):
                break
            add(_result(item))
        job.save(complete=False)
        raise
    for done in job.damaged:
        add(done)
    job.save(complete=True)
    return JobResult(outputs, reused, workers)
