"""Is the concept in this photo? A presence threshold on the similarity map.

PerSAM always places its positive point at the similarity arg-max, so it
always returns a mask. To say "not in this photo", a concept carries a
threshold on the grid's best cosine similarity, calibrated on its references:

* ``fg``: the similarities of the reference's own object cells (those pooled
  into the target), summarised by their mean;
* ``bg``: the similarities of the reference's background cells at least one
  cell away from the mask, summarised by their maximum (the most
  object-like background the concept has seen);

threshold = the midpoint of the two (``bg`` when the two are inverted, which
only happens with meaningless features). A photo whose best cell scores below
it is declared to hold no instance; each further instance of the concept
in one photo must pass it too.

SAM 2 models add a second signal: the decoder's object-score head (a logit,
> 0 = "an object is there", the test SAM 2's own video predictor uses to
blank a lost object). Absence detection takes both, in order: the
similarity test first (cheap: no decoder pass); if it passes, PerSAM runs
and its final mask is kept only if that pass's object score is > 0
(``object_present``). So a photo counts as holding the concept only when
both say so; the SAM 1 family, without that head, uses the similarity alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from persam.backends.base import EncodedImage
from persam.method.target import object_cells, similarity, touched_cells


@dataclass(frozen=True)
class PresenceStats:
    """Similarity statistics of one or more references.

    Attributes:
        fg_mean: mean similarity of the object cells.
        bg_max: best similarity of background cells away from the mask.
    """

    fg_mean: float
    bg_max: float

    @property
    def threshold(self) -> float:
        """The calibrated presence threshold (see the module docstring)."""
        if self.fg_mean <= self.bg_max:
            return self.bg_max
        return 0.5 * (self.fg_mean + self.bg_max)


def object_present(object_score: float | None) -> bool:
    """SAM 2's presence test on a mask's object-score logit: > 0; always True without one (SAM 1 family)."""
    return object_score is None or object_score > 0


def reference_similarities(
    encoded: EncodedImage,
    mask: torch.Tensor,
    direction: torch.Tensor,
    cell_threshold: float,
    allow_touched: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(object cell similarities, background cell similarities) of a reference.

    Object cells are those pooled into the target (``object_cells``, with
    the same ``allow_touched`` fallback). Background cells are the cells of
    the photo (not the padding) that the mask does not touch
    (``touched_cells``), dilated by one cell so that cells bordering the
    object do not count as background.
    """
    sim = similarity(encoded, direction).cpu()
    geometry = encoded.geometry
    fg, _ = object_cells(mask, geometry, cell_threshold, allow_touched)
    touched = touched_cells(mask, geometry) | fg
    near = F.max_pool2d(touched[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    inside = torch.zeros_like(near)
    rh, rw = geometry.resized_hw
    s = geometry.input_size
    gh, gw = geometry.grid_hw
    inside[: max(1, round(rh / s * gh)), : max(1, round(rw / s * gw))] = True  # cells of the photo, not padding
    return sim[fg], sim[~near & inside]


def pool_stats(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> PresenceStats:
    """Presence statistics over several references' (fg, bg) similarities."""
    fg = torch.cat([p[0] for p in pairs])
    bg = torch.cat([p[1] for p in pairs])
    bg_max = float(bg.max()) if bg.numel() else float(fg.min())
    return PresenceStats(fg_mean=float(fg.mean()), bg_max=bg_max)
