"""Which runs warm their image encoder up while PyTorch is still being imported (``persam.backends.warm``).

A run that encodes photos through a cached OpenVINO conversion of a SAM 1 family model (``--runtime openvino``
with a weights file) starts the warm start before the model loads: the conversion is compiled, and the
references' photos and the first targets encoded, on the cores the import leaves idle. The masks are the same
either way (the encoder answers only an input equal to one it ran, with that run's outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from persam.engine.job import Source
from persam.engine.spec import JobSpec, References


def warm_start(spec: JobSpec, sources: Sequence[Source]) -> bool:
    """Start the warm start for ``spec`` if it applies (see the module docstring); whether it started."""
    model = spec.model
    if model.runtime != "openvino" or model.random_weights or (model.device or "cpu") != "cpu":
        return False
    from persam.backends.models import find

    entry = find(model.model)
    if entry is None or entry.family != "sam" or entry.normalization != "meanstd":
        return False
    from persam.backends.checkpoints import cached_checkpoint

    weights = Path(model.checkpoint).expanduser() if model.checkpoint else cached_checkpoint(model.model)
    if weights is None or not weights.is_file():
        return False
    photos = list(spec.concept.photos) if isinstance(spec.concept, References) else []
    photos += [str(s.path) for s in sources]
    from persam.backends.warm import MAX_PHOTOS, default_threads, start

    files = [p for p in photos[: MAX_PHOTOS * 2] if Path(p).is_file()]
    start(entry.name, weights, model.precision, default_threads(), files, entry.input_size)
    return True
