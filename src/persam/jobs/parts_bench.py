"""The part-aware prior's cost beyond the encoder, for ``persam bench``.

``PartsStage`` is one more stage of the interleaved bench rounds: the
part-aware prior (parts 1..5, the published setting) on an encoded photo,
full-resolution mask included, like PerSAM's stage. It also records the
share of that time spent on the transport problems (clustering is done once
per concept, when personalizing, and is not part of the per-photo cost).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from persam.backends import EncodedImage


class PartsStage:
    """A callable bench stage: the part-aware prior on ``encoded`` (a fresh photo each call).

    Args:
        session: the ``PersamModel``.
        encoded_ref: the encoded reference photo. ref_mask: its (H, W) bool mask.
        encoded: the encoded target photo.
        fresh: drops the photo's per-image products before each call (as for a new photo).
    """

    def __init__(
        self,
        session,
        encoded_ref: EncodedImage,
        ref_mask: np.ndarray,
        encoded: EncodedImage,
        fresh: Callable[[EncodedImage], EncodedImage],
    ) -> None:
        self.concept = session.personalize(encoded_ref, ref_mask, prior="part-aware")
        self.session, self.encoded, self.fresh = session, encoded, fresh
        self.transport: list[float] = []
        self.totals: list[float] = []

    def __call__(self) -> object:
        return self.concept.segment(self.fresh(self.encoded))

    def measure_transport(self) -> None:
        """One run of the method step itself, recording its total and transport times."""
        from persam.method.parts import segment_parts

        start = time.perf_counter()
        out = segment_parts(self.session.backend, self.fresh(self.encoded), self.concept.parts, self.concept.settings)
        self.totals.append(time.perf_counter() - start)
        self.transport.append(out.transport_s)

    @property
    def transport_share(self) -> float:
        """Median fraction of the method step's time spent on transport (0 before any measurement)."""
        if not self.totals:
            return 0.0
        return statistics.median(t / max(total, 1e-12) for t, total in zip(self.transport, self.totals))
