"""Where the image encoder's time goes through OpenVINO fp32, against this CPU's matrix-product speed.

Usage: python benchmarks/encoder_profile.py [--model vit_t] [--runs 3]

Converts the model's prepared fp32 encoder (seeded random weights, the
arithmetic of trained ones) with OpenVINO, runs it ``--runs`` times with
OpenVINO's per-layer counters on, and prints the last run's time by layer
type. Beside it: the encoder's arithmetic by PyTorch operation
(``torch.utils.flop_counter``), the speed its fully connected layers reach
(the linear layers' FLOP over OpenVINO's FullyConnected time), and the speed
of one large fp32 matrix product (4096 x 4096, PyTorch, best of 5): the
ceiling an exact fp32 runtime works under on this CPU.
"""

from __future__ import annotations

import argparse
import collections
import time
import warnings

import torch


def matmul_gflops(n: int = 4096, runs: int = 5) -> float:
    """Best GFLOP/s of an (n, n) @ (n, n) fp32 product over ``runs`` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_seconds(lambda: a @ b) for _ in range(runs))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_t")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import openvino as ov
    from torch.utils.flop_counter import FlopCounterMode

    from persam.backends.registry import create_backend

    torch.manual_seed(0)
    backend = create_backend(args.model, random_weights=True, device="cpu")
    size = backend.preprocessing.input_size
    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backend.image_encoder(x)
    flops = {str(op): count for op, count in counter.get_flop_counts()["Global"].items()}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model = ov.convert_model(torch.jit.trace(backend.image_encoder, x, check_trace=False), example_input=x)
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True, "INFERENCE_NUM_THREADS": torch.get_num_threads()},
    )
    request = compiled.create_infer_request()
    walls = [_seconds(lambda: request.infer({0: x.numpy()})) for _ in range(max(args.runs, 1))]
    by_type: dict[str, float] = collections.Counter()
    for layer in request.profiling_info:
        by_type[layer.node_type] += layer.real_time.total_seconds()
    total = sum(by_type.values())
    print(
        f"{args.model} encoder, {size}x{size} input, OpenVINO fp32, {torch.get_num_threads()} threads: "
        f"{1000 * walls[-1]:.0f} ms wall, {1000 * total:.0f} ms in layers (last of {len(walls)} runs)"
    )
    for kind, seconds in sorted(by_type.items(), key=lambda item: -item[1]):
        if seconds >= 0.005 * total:
            print(f"  {kind:<20} {1000 * seconds:8.1f} ms  {100 * seconds / total:5.1f} %")
    print(
        "arithmetic by PyTorch operation: "
        + ", ".join(f"{op} {count / 1e9:.1f} GFLOP" for op, count in sorted(flops.items(), key=lambda item: -item[1]))
    )
    linear = sum(count for op, count in flops.items() if op.split(".")[-1] in ("addmm", "mm"))
    fc = by_type.get("FullyConnected", 0.0)
    peak = matmul_gflops()
    if fc > 0:
        print(
            f"fully connected layers: {linear / 1e9:.1f} GFLOP in {1000 * fc:.0f} ms = {linear / fc / 1e9:.0f} "
            "GFLOP/s, "
            f"{100 * linear / fc / 1e9 / peak:.0f} % of one large matrix product's {peak:.0f} GFLOP/s on this CPU"
        )
    else:
        print(f"one large matrix product on this CPU: {peak:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
