"""The method options' rules, once: what the session API, the job engine and so every front end refuse.

Each rule raises ``persam.errors.OptionsError`` with a neutral message and ``field`` set to the option's
name as the Python API and the job spec call it (``prior``, ``parts``, ``finetune``, ``max_instances``,
``without``); the command line turns the field into its flag when it prints. The job engine
(``persam.engine.checks``) calls these before any model is loaded; ``PersamModel.personalize`` and
``Concept.segment_instances`` call them for Python callers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from persam.errors import OptionsError
from persam.method.settings import COMPONENTS, DEFAULT_PARTS, FitSettings, PersamSettings, check_parts

__all__ = [
    "COMPONENTS",
    "DEFAULT_PARTS",
    "FitSettings",
    "PersamSettings",
    "MAX_INSTANCES",
    "PRIORS",
    "check_absence",
    "check_instances",
    "check_matcher",
    "check_presence",
    "check_prior",
    "check_without",
    "method_settings",
]

#: The location priors: PerSAM's similarity point, P2SAM's part-aware points.
PRIORS = ("similarity", "part-aware", "matcher")
#: The most instances one label map holds (uint8, 0 = background).
MAX_INSTANCES = 255


def check_prior(prior: str, parts: tuple[int, int] | None, finetune: bool) -> tuple[int, int] | None:
    """``parts`` checked against ``prior`` (None stays None: the prior's default).

    Raises:
        OptionsError: an unknown prior; part counts without the part-aware prior; the part-aware prior
            with PerSAM-F (it is training-free); part counts that are not 1 <= min <= max.
    """
    if prior not in PRIORS:
        raise OptionsError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}", field="prior")
    if parts is not None and prior != "part-aware":
        raise OptionsError(
            "part counts apply to the part-aware prior only; choose that prior or leave the part counts unset",
            field="parts",
        )
    if prior in ("part-aware", "matcher") and finetune:
        raise OptionsError(
            f"the {prior} prior is training-free; learn without fine-tuning (PerSAM) or use the similarity prior",
            field="finetune",
        )
    return None if parts is None else check_parts(parts)


def check_matcher(prior: str, has_settings: bool, components_off: bool) -> None:
    """Matcher's settings only with its prior; its prior has no PerSAM components to switch off."""
    if has_settings and prior != "matcher":
        raise OptionsError(
            "matcher settings apply to the matcher prior only; choose it or leave them unset", field="prior"
        )
    if prior == "matcher" and components_off:
        raise OptionsError("the matcher prior has no PerSAM components to switch off", field="without")


def check_absence(prior: str, detect_absent: bool) -> None:
    """Absence detection (or a presence threshold) only with the priors that have a presence test."""
    if prior == "matcher" and detect_absent:
        raise OptionsError(
            "absence detection is defined for the similarity and part-aware priors only; "
            "the matcher prior always returns its merged mask",
            field="detect_absent",
        )


def check_without(without: Sequence[str]) -> tuple[str, ...]:
    """The components to switch off, each known, sorted and once."""
    unknown = [name for name in without if name not in COMPONENTS]
    if unknown:
        raise OptionsError(
            f"unknown component {unknown[0]!r}; choose from {', '.join(COMPONENTS)}",
            field="without",
        )
    return tuple(sorted(set(without)))


def check_instances(max_instances: int, prior: str) -> int:
    """``max_instances`` in 1..255, and above 1 only with the similarity prior."""
    try:
        whole = not isinstance(max_instances, bool) and int(max_instances) == max_instances
    except (TypeError, ValueError):
        whole = False
    if not whole or not 1 <= int(max_instances) <= MAX_INSTANCES:
        raise OptionsError(
            f"the number of instances must be a whole number from 1 to {MAX_INSTANCES}, got {max_instances!r}",
            field="max_instances",
        )
    if max_instances > 1 and prior != "similarity":
        raise OptionsError(
            "several instances are found with the similarity prior only; ask for one instance or use that prior",
            field="max_instances",
        )
    return int(max_instances)


def check_presence(detect_absent: bool, presence_threshold: float | None) -> bool:
    """Whether absence is detected: a presence threshold implies it; the threshold must be a finite number."""
    if presence_threshold is not None:
        if not isinstance(presence_threshold, (int, float)) or not math.isfinite(presence_threshold):
            raise OptionsError(
                f"the presence threshold must be a finite number, got {presence_threshold!r}",
                field="presence_threshold",
            )
        return True
    return bool(detect_absent)


def method_settings(without: Sequence[str] = ()):
    """``PersamSettings`` (the paper's defaults) with the ``without`` components switched off."""
    return PersamSettings().without(*check_without(without))
