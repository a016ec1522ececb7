"""Two PerSAM decoders at once: as two threads of one process (how `persam segment` runs its two workers)
against two processes, and one decoder alone; seconds per photo.

Usage: python benchmarks/decoder_workers.py [--photos 16] [--rounds 3] [--json FILE]

Random-weight MobileSAM (vit_t) decoder, random (1, 256, 64, 64) embeddings of 1024-px photos, PerSAM's
three passes photo by photo (``segment_persam_photos`` of one photo), each decoder on one torch thread.
Each round runs, in turn: one decoder alone (``--photos`` photos); two threads in one process, each
decoding ``--photos`` photos; two processes (``multiprocessing`` spawn, the model built in each before
the clock starts), each decoding ``--photos`` photos. A decoder's seconds per photo are its wall time over
its photos; medians over the rounds. The threads share one interpreter lock between the decoders' Python
steps; the processes share only the cores and their caches.
``--json FILE`` writes the figures with the command and the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import statistics
import sys
import threading
import time


def _setup():
    """(backend, geometry, target): a fresh random-weight MobileSAM on one torch thread, the geometry of a
    1024-px photo and a random target of 20 cells."""
    import torch

    from persam.backends import create_backend
    from persam.backends.allocator import keep_freed_memory
    from persam.method.target import TargetFeatures

    keep_freed_memory()  # as the `persam` script
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backend = create_backend("vit_t", random_weights=True, device="cpu")
    return backend, backend.geometry((1024, 1024)), TargetFeatures.from_cells([torch.randn(20, 256)])


def _decoder():
    """(decode(n) -> seconds per photo) on a fresh random-weight MobileSAM decoder, one torch thread."""
    import torch

    from persam.backends.base import EncodedImage
    from persam.method.persam import segment_persam_photos
    from persam.method.settings import PersamSettings

    backend, geometry, target = _setup()

    def decode(n: int) -> float:
        photos = [EncodedImage(torch.randn(1, 256, 64, 64), geometry) for _ in range(n)]
        start = time.perf_counter()
        for photo in photos:
            segment_persam_photos(backend, [photo], target, PersamSettings())
        return (time.perf_counter() - start) / n

    decode(2)  # warm-up
    return decode


def _process(conn, photos: int) -> None:
    decode = _decoder()
    conn.send("ready")
    while conn.recv() == "go":
        conn.send(decode(photos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    args = parser.parse_args()

    decode = _decoder()
    second = _decoder()  # the second thread's own model, as the second process has its own
    ctx = multiprocessing.get_context("spawn")
    pipes = []
    for _ in range(2):
        here, there = ctx.Pipe()
        ctx.Process(target=_process, args=(there, args.photos), daemon=True).start()
        pipes.append(here)
    for pipe in pipes:
        pipe.recv()  # built and warmed up
    times: dict[str, list[float]] = {"alone": [], "two threads": [], "two processes": []}
    for _ in range(args.rounds):
        times["alone"].append(decode(args.photos))
        got: list[float] = []

        def run(d, out: list[float] = got) -> None:
            out.append(d(args.photos))

        threads = [threading.Thread(target=run, args=(d,)) for d in (decode, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        times["two threads"].append(statistics.mean(got))
        for pipe in pipes:
            pipe.send("go")
        times["two processes"].append(statistics.mean(pipe.recv() for pipe in pipes))
    for pipe in pipes:
        pipe.send("stop")
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"persam, vit_t random weights, 1 torch thread per decoder, medians of {args.rounds} interleaved rounds")
    for name, seconds in medians.items():
        print(f"  {name:<14} {seconds:.4f} s/photo per decoder  rounds {[round(s, 4) for s in times[name]]}")
    print(f"  two threads / two processes: {medians['two threads'] / medians['two processes']:.2f} x")
    if args.json:
        from persam.jobs.machine import write_results

        figures = {
            "photos_per_decoder": args.photos,
            "rounds": args.rounds,
            "seconds_per_photo_median": medians,
            "seconds_per_photo_rounds": times,
        }
        command = shlex.join(["python", "benchmarks/decoder_workers.py", *sys.argv[1:]])
        write_results(args.json, command, figures, device="cpu")


if __name__ == "__main__":
    main()
