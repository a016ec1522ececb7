"""The decoder-family contract: how one family's mask decoder runs with PerSAM's guidance.

Each family (``Backend.family``) has one ``DecoderRunner``: a function that
turns an encoded image, prompts in encoder-frame coordinates, the multi-mask
choice and ``Guidance`` into logits, predicted IoU and (SAM 2) the object
score, and a declaration of whether it uses the re-associated SAM 1 decoder
(``fast_path``). ``persam.method.decoder.predict`` dispatches by family; the
method layer above it never touches a decoder's submodules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from persam.backends.base import Backend, EncodedImage
    from persam.method.guided import Guidance


@dataclass(frozen=True)
class DecoderPass:
    """One batched decoder pass.

    Attributes:
        logits: (B, K, 4h, 4w) float32 mask logits; K = 3 (multi-mask) or 1.
        iou: (B, K) predicted IoU.
        object_score: (B,) SAM 2's object-score logit (> 0: an object is there), or None (SAM 1 family).
    """

    logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor | None = None

    def best(self) -> DecoderPass:
        """Each prompt's mask with the highest predicted IoU (the first on ties), K = 1."""
        k = torch.argmax(self.iou, dim=1)
        rows = torch.arange(self.iou.shape[0], device=k.device)
        return DecoderPass(self.logits[rows, k][:, None], self.iou[rows, k][:, None], self.object_score)


#: ``(backend, encoded, points, boxes, masks, multimask, guidance, exact, best_only) -> DecoderPass``; points
#: ((B, N, 2) (x, y), (B, N) labels) and boxes (B, 4) XYXY in encoder-frame pixels, masks (B, 1, 4h, 4w);
#: ``best_only`` (with ``multimask``): each prompt's best mask only (``DecoderPass.best``).
PredictFn = Callable[
    [
        "Backend",
        "EncodedImage",
        "tuple[torch.Tensor, torch.Tensor] | None",
        "torch.Tensor | None",
        "torch.Tensor | None",
        bool,
        "Guidance",
        bool,
        bool,
    ],
    DecoderPass,
]


@dataclass(frozen=True)
class DecoderRunner:
    """How one decoder family runs.

    Attributes:
        family: the ``Backend.family`` it serves.
        predict: the batched pass (``PredictFn``).
        fast_path: whether this family may use the re-associated SAM 1 decoder
            (``persam.method.factored``); only the SAM 1 family declares it.
    """

    family: str
    predict: PredictFn
    fast_path: bool = False
