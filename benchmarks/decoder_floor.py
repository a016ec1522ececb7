"""PerSAM's decoder against its own matrix products: how close one photo's three passes come to the time
of their products alone, alone and as two decoders at once.

Usage: python benchmarks/decoder_floor.py [--photos 16] [--rounds 5] [--album 200] [--products-only]
       [--json FILE]

The decoder is ``decoder_workers.py``'s (random-weight MobileSAM, random (1, 256, 64, 64) embeddings of
1024-px photos, ``segment_persam_photos`` of one photo, one torch thread per decoder). One photo's passes
run once under a dispatch recorder that keeps every matrix product and convolution PyTorch is asked for
(``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``: operator, shapes, strides) and counts every
other operator. The products are then replayed on random tensors of those shapes and strides, made once
and reused for every photo (so they are as warm in the caches as they can be): the time of one photo's
products with nothing else, a lower bound for any float32 decoder that computes them with PyTorch's
kernels on this machine. Each round runs: the decoder alone, the products alone, two decoders as two
threads, two product replays as two threads (``persam segment`` decodes in two threads). Seconds per
photo are a thread's wall time over its photos; medians over the rounds.

``--products-only`` runs the two product replays only (as ``album_throughput.py --floor`` does).
``--album N`` also prints the products' floor for N photos on two threads (what ``persam segment
--index`` of N indexed photos could reach at best, start-up and files not counted).
``--json FILE`` writes the figures with the command and the machine.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

PRODUCTS = ("mm", "addmm", "bmm", "baddbmm", "baddbmm_", "convolution")


@dataclass(frozen=True)
class Product:
    """One recorded product: its operator, positional arguments (tensors as (shape, stride)) and keywords."""

    op: object
    args: tuple
    kwargs: dict
    flops: int


def _flops(name: str, args: tuple, out_numel: int) -> int:
    """Multiply-adds times two of a product, from its arguments' shapes and its output's size."""
    if name != "convolution":  # (b)mm: out elements x the inner size; addmm/baddbmm take the sum first
        a = args[1] if name.startswith(("addmm", "baddbmm")) else args[0]
        return 2 * out_numel * a.shape[-1]
    weight = args[1]  # convolution: out elements x (in channels / groups) x kernel area
    return 2 * out_numel * weight[0].numel()


@contextmanager
def recording():
    """Record the products (``Product``) dispatched inside the block, and count every operator.

    Composite operators (``linear``, ``matmul``, ...) are followed into what they run, so a product
    reached through one is recorded as the product its kernel computes; ``ops`` counts the operators
    that ran (views included).

    Yields:
        (products, ops): the list of ``Product`` in call order, and a ``Counter`` of operator names.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    products: list[Product] = []
    ops: Counter[str] = Counter()

    def meta(x):
        return ("tensor", tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func.overloadpacket.__name__
            if name not in PRODUCTS:  # a composite operator (linear, matmul, ...): record what it runs
                with self:
                    out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            ops[name] += 1
            out = func(*args, **kwargs)
            if name in PRODUCTS:
                args_meta = tuple(meta(a) for a in args)
                flops = _flops(name, args, out.numel())
                products.append(Product(func, args_meta, {k: meta(v) for k, v in kwargs.items()}, flops))
            return out

    with torch.no_grad(), Recorder():
        yield products, ops


def record(backend, photo, target, settings):
    """The products (``Product``) of one photo's PerSAM passes, and a count of the operators that ran."""
    from persam.method.persam import segment_persam_photos

    with recording() as (products, ops):
        segment_persam_photos(backend, [photo], target, settings)
    return products, ops


def _tensor(shape: tuple, stride: tuple, dtype):
    """A random tensor of that shape and stride (stride 0 where the recorded one was expanded)."""
    import torch

    size = 1 + sum((s - 1) * st for s, st in zip(shape, stride) if s > 0)
    return torch.randn(max(size, 1)).to(dtype).as_strided(shape, stride)


def replayer(products: list[Product]):
    """(replay(n) -> seconds per photo): the products on their own random inputs, made once."""
    import torch

    def build(x):
        return _tensor(*x[1:]) if isinstance(x, tuple) and x and x[0] == "tensor" else x

    calls = []
    for p in products:
        args = tuple(build(a) for a in p.args)
        if p.op.overloadpacket.__name__ == "baddbmm_":  # in place: its own contiguous target
            args = (args[0].contiguous(), *args[1:])
        calls.append((p.op, args, {k: build(v) for k, v in p.kwargs.items()}))

    def replay(n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):
                for op, args, kwargs in calls:
                    op(*args, **kwargs)
        return (time.perf_counter() - start) / n

    replay(2)  # warm-up
    return replay


def _two(first, second, n: int) -> float:
    """Mean seconds per photo of ``first(n)`` and ``second(n)`` run as two threads at once."""
    got: list[float] = []
    threads = [threading.Thread(target=lambda f=f: got.append(f(n))) for f in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statistics.mean(got)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16, help="photos per decoder and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--album", type=int, default=200, help="photos of the album whose floor is printed")
    parser.add_argument(
        "--products-only", action="store_true", help="time only the two product replays (no decoder runs)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    args = parser.parse_args()

    import torch

    from decoder_workers import _decoder, _setup  # this folder's script (sys.path[0])
    from persam.backends.base import EncodedImage
    from persam.method.settings import PersamSettings

    backend, geometry, target = _setup()
    photo = EncodedImage(torch.randn(1, 256, 64, 64), geometry)
    products, ops = record(backend, photo, target, PersamSettings())
    gflop = sum(p.flops for p in products) / 1e9
    replay, replay2 = replayer(products), replayer(products)
    runs = {"two replays": lambda: _two(replay, replay2, args.photos)}
    if not args.products_only:
        decode, second = _decoder(), _decoder()
        runs = {
            "decoder alone": lambda: decode(args.photos),
            "products alone": lambda: replay(args.photos),
            "two decoders": lambda: _two(decode, second, args.photos),
            **runs,
        }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(run())
    med = {k: statistics.median(v) for k, v in times.items()}
    by_op = Counter()
    for p in products:
        by_op[p.op.overloadpacket.__name__] += p.flops
    print(
        f"persam, vit_t random weights, one photo's three passes, 1 torch thread per decoder, medians of {args.rounds}"
    )
    print(f"  {len(products)} products ({gflop:.2f} GFLOP) among {sum(ops.values())} operators dispatched a photo")
    print("  GFLOP by operator: " + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in by_op.most_common()))
    for name, seconds in med.items():
        rounds = [round(s, 4) for s in times[name]]
        print(f"  {name:<15} {seconds:.4f} s/photo  ({gflop / seconds:5.1f} GFLOP/s)  rounds {rounds}")
    album = {"products alone": args.album * med["two replays"] / 2}
    if not args.products_only:
        print(f"  products' share of the decoder: alone {med['products alone'] / med['decoder alone']:.0%}, "
              f"two at once {med['two replays'] / med['two decoders']:.0%}")  # fmt: skip
        album["decoder"] = args.album * med["two decoders"] / 2
    print(f"  {args.album} photos on two threads: " + ", ".join(f"{k} {v:.1f} s" for k, v in album.items()))
    if args.json:
        from persam.jobs.machine import write_results

        figures = {
            "photos_per_decoder": args.photos,
            "rounds": args.rounds,
            "products_per_photo": len(products),
            "operators_per_photo": sum(ops.values()),
            "gflop_per_photo": gflop,
            "gflop_by_operator": {k: v / 1e9 for k, v in by_op.items()},
            "seconds_per_photo_median": med,
            "seconds_per_photo_rounds": times,
            "album_photos": args.album,
            "album_seconds_two_threads": album,
        }
        command = shlex.join(["python", "benchmarks/decoder_floor.py", *sys.argv[1:]])
        write_results(args.json, command, figures, device="cpu")


if __name__ == "__main__":
    main()
