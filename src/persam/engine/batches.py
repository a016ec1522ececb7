"""Photos decoded together and written behind: the in-process executor's groups (``persam.engine.local``).

``Batcher`` gathers photos, as they are read, into groups of ``size`` and has a worker thread segment each
group at once (the decoder batched across its photos: ``persam.session.dispatch.segment_photos``); each
photo's files are then written by a small writer pool while the workers go on with the next group. Every
photo has its own ``Future``, resolved once its files are written, so the executor records results in
input order as before. Memory is bounded by the executor's window of photos read ahead
(``local.ahead``): at most that many photos' pixels and embeddings are held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

#: What a group's segmenting returns per photo: the write still to do, giving the photo's result.
Finish = Callable[[], Any]


def default_batch(device) -> int:
    """Photos decoded together by default: 1 (photo by photo), so that a photo redone by a resumed run is
    bit-identical to its first run and Ctrl-C finishes only the photo being segmented; on a CPU no gain
    from groups was shown (``benchmarks/decoder_batch.py``: slower per photo in two runs, faster in one,
    on a loaded 2-core machine). ``--batch`` is for the user to try, on a GPU above all (not measured)."""
    del device
    return 1


class Batcher:
    """Groups of ``size`` photos segmented by ``workers`` and written by ``writers``.

    Args:
        workers: the pool that segments a group (``segment(args) -> [Finish, ...]``, one per photo).
        writers: the pool that runs each photo's ``Finish`` (its files), or None (run by the worker).
        segment: a group's segmenting; it must not raise for a photo's own error (it returns a
            ``Finish`` giving that photo's listed failure instead).
        size: photos per group (1: photo by photo).
    """

    def __init__(
        self,
        workers: ThreadPoolExecutor,
        writers: ThreadPoolExecutor | None,
        segment: Callable[[Sequence[tuple]], list[Finish]],
        size: int,
    ) -> None:
        self.workers, self.writers, self.segment, self.size = workers, writers, segment, max(1, int(size))
        self._pending: list[tuple[tuple, Future]] = []

    def add(self, *args: Any) -> Future:
        """One photo's future (its result once written); its group starts when full (or at ``flush``)."""
        future: Future = Future()
        self._pending.append((args, future))
        if len(self._pending) >= self.size:
            self.flush()
        return future

    def flush(self) -> None:
        """Start the group gathered so far, if any."""
        group, self._pending = self._pending, []
        if group:
            self.workers.submit(self._run, group)

    def _run(self, group: list[tuple[tuple, Future]]) -> None:
        try:
            finishes = self.segment([args for args, _ in group])
            for (_, future), finish in zip(group, finishes):
                if self.writers is None:
                    _resolve(future, finish)
                else:
                    self.writers.submit(_resolve, future, finish)
        except BaseException as exc:  # Ctrl-C's Stopped, or a bug outside a photo's own handling
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            raise


def _resolve(future: Future, finish: Finish) -> None:
    try:
        future.set_result(finish())
    except BaseException as exc:
        future.set_exception(exc)
        raise
