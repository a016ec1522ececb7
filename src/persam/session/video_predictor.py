"""SAM 2's official video predictor (``sam2.SAM2VideoPredictor``): loading it, and propagating without its bar.

``propagate_in_video`` (sam2 1.1.0) wraps the frames it tracks in its own
tqdm bar ("propagate in video") and has no option to turn it off; that bar
would mix with the caller's progress. ``propagate`` runs the official
generator with the name ``tqdm`` of the predictor's module bound to a
pass-through while the generator makes its bar (its first step), and
restored right after. Nothing else changes: tqdm itself, other modules'
bars and the tracked outputs are untouched.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from persam.errors import OptionsError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

_BAR_LOCK = threading.Lock()
_BAR_USERS: dict[str, list] = {}  # module name -> [callers inside _official_bar_off, the module's own tqdm]
_END = object()
T = TypeVar("T")


def _pass_through(iterable: Iterable[T], *args: object, **kwargs: object) -> Iterable[T]:
    """Stands in for ``tqdm(iterable, desc=...)``: the iterable itself, no bar."""
    return iterable


@contextmanager
def _official_bar_off(predictor: nn.Module) -> Iterator[None]:
    """Bind the name ``tqdm`` of the module defining the predictor's ``propagate_in_video`` to ``_pass_through``
    while inside (nested and thread-safe: restored when the last caller leaves). A module without that name
    (another package version) is left alone."""
    module = sys.modules.get(type(predictor).propagate_in_video.__module__)
    if module is None or not hasattr(module, "tqdm"):
        yield
        return
    with _BAR_LOCK:
        users = _BAR_USERS.setdefault(module.__name__, [0, None])
        if users[0] == 0:
            users[1], module.tqdm = module.tqdm, _pass_through
        users[0] += 1
    try:
        yield
    finally:
        with _BAR_LOCK:
            users[0] -= 1
            if users[0] == 0:
                module.tqdm = users[1]


def propagate(predictor: nn.Module, state: dict, start: int) -> Iterator[tuple[int, list, torch.Tensor]]:
    """``predictor.propagate_in_video(state, start_frame_idx=start)``'s items, without the package's progress bar.

    Yields ``(frame_index, object_ids, logits)`` as the official generator
    does (logits: (N, 1, H, W) at video resolution); closing this generator
    closes the official one.
    """
    stream = predictor.propagate_in_video(state, start_frame_idx=start)
    try:
        with _official_bar_off(predictor):  # the official generator makes its bar on its first step
            first = next(stream, _END)
        if first is _END:
            return
        yield first
        yield from stream
    finally:
        stream.close()


def require_sam2(name: str) -> None:
    """``OptionsError`` unless ``name`` is a SAM 2 model (checked before anything is loaded or written)."""
    from persam.backends import sam2_models

    if not sam2_models.is_sam2(name):
        raise OptionsError(
            f"--tracker sam2 runs a SAM 2 model, not {name!r}; pass --model "
            f"{' / '.join(n for n in sam2_models.CONFIGS if n != 'sam2_tiny')}"
        )


def load_video_predictor(
    name: str,
    checkpoint: str | None = None,
    *,
    random_weights: bool = False,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, str]:
    """SAM 2's video predictor ``name`` with its weights, and the weights' SHA-256 ("random" for random weights).

    Args:
        name: a SAM 2 model (``persam.backends.sam2_models.CONFIGS``).
        checkpoint: an official-layout file; None = the model's known download.
        random_weights: no weights (seed torch first for reproducible ones).
        device: "cpu", "cuda", ... or None for the best available.

    Raises:
        ValueError: not a SAM 2 model, or weights that do not fit; FileNotFoundError: no such checkpoint.
    """
    from persam.backends import sam2_models
    from persam.backends.registry import resolve_device

    require_sam2(name)
    dev = resolve_device(device)
    predictor = sam2_models.build_model(name, video=True, device="cpu")
    sha = "random"
    if not random_weights:
        from persam.backends.checkpoints import resolve_checkpoint
        from persam.io.hashing import file_sha256

        path = resolve_checkpoint(name, checkpoint)
        sam2_models.load_weights(predictor, path)
        sha = file_sha256(path)
    return predictor.to(dev).eval(), sha
