"""Settings of the method: small frozen dataclasses whose defaults are the reference's (no torch here:
the command line builds its options from this module)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from persam.errors import OptionsError

#: The part counts the part-aware prior tries (P2SAM's published setting).
DEFAULT_PARTS = (1, 5)

# The reference draws the mask as red 128 and thresholds it after SAM's pixel
# normalisation (red mean 123.675): a cell counts when its bilinear sample of
# the resized mask exceeds 123.675 / 128 of full coverage.
CELL_THRESHOLD = 123.675 / 128

#: Components that ``--without`` can switch off (ablations of the paper).
COMPONENTS = ("guided-attention", "semantic-prompt", "negative-point", "refinement")


@dataclass(frozen=True)
class PersamSettings:
    """Training-free PerSAM.

    Attributes:
        guided_attention: target-guided attention in the first decoder pass.
        semantic_prompt: add the target embedding to the decoder tokens.
        negative_point: add the similarity arg-min as a background point.
        refinement: the two cascaded post-refinement passes.
        cell_threshold: fraction of a feature cell the reference mask must cover.
    """

    guided_attention: bool = True
    semantic_prompt: bool = True
    negative_point: bool = True
    refinement: bool = True
    cell_threshold: float = CELL_THRESHOLD

    def __post_init__(self) -> None:
        if not 0.0 < self.cell_threshold <= 1.0:
            raise OptionsError(f"cell_threshold must be in (0, 1], got {self.cell_threshold}")

    def without(self, *components: str) -> PersamSettings:
        """A copy with the named components (see ``COMPONENTS``) switched off."""
        changes = {}
        for name in components:
            if name not in COMPONENTS:
                raise OptionsError(f"unknown component {name!r}; choose from {', '.join(COMPONENTS)}")
            changes[name.replace("-", "_")] = False
        return replace(self, **changes)

    def disabled(self) -> list[str]:
        """Names of the components switched off."""
        return [c for c in COMPONENTS if not getattr(self, c.replace("-", "_"))]

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FitSettings:
    """PerSAM-F's fit of the two mask weights (reference: AdamW, cosine, 1000 steps).

    Attributes:
        steps: optimisation steps.
        lr: AdamW learning rate (cosine-annealed to 0 over ``steps``).
        eps: AdamW epsilon.
        weight_decay: AdamW decoupled weight decay (PyTorch's default).
        betas: AdamW betas.
        block: pixels of the full-resolution maps are pooled in blocks of
            ``block`` x ``block`` (per class of the reference mask); 0 picks it
            from the image size (see ``persam.method.persam_f``); 1 is
            pixel by pixel.
    """

    steps: int = 1000
    lr: float = 1e-3
    eps: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    block: int = 0
    taylor_radius: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lr <= 0 or self.block < 0:
            raise OptionsError("steps and block must be >= 0 and lr > 0")

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_parts(parts: tuple[int, int]) -> tuple[int, int]:
    """``(min, max)`` part counts, validated (1 <= min <= max).

    Raises:
        OptionsError: a count below 1 or min above max.
    """
    lo, hi = (int(v) for v in parts)
    if lo < 1 or hi < lo:
        raise OptionsError(f"part counts must be MIN..MAX with 1 <= MIN <= MAX, got {lo}..{hi}", field="parts")
    return lo, hi
