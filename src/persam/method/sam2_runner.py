"""The SAM 2 family's decoder runner (``sam2``'s ``MaskDecoder``), as ``SAM2ImagePredictor`` runs it.

Differences from the SAM 1 family, all kept here:

* prompts: a box goes in as two corner points (labels 2, 3) *before* the
  clicks, and the prompt encoder gets ``boxes=None`` (so a padding point is
  appended), as ``SAM2ImagePredictor._predict`` does;
* tokens [object score, IoU, 4 mask tokens, prompts]; the object-score head
  reads token 0 (``DecoderPass.object_score``, a logit: > 0 = an object);
* upscaling adds the image's high-resolution skips
  (``EncodedImage.high_res_features``, already through ``conv_s0``/``conv_s1``);
* one mask asked for: ``dynamic_multimask_via_stability`` (token 0 if its
  mask is stable, else the best of tokens 1-3 by predicted IoU), as the
  model is built by ``build_sam2``;
* low-resolution logits clamped to [-32, 32], as the predictor returns them.

Without guidance the official decoder's ``forward`` runs; with it the same
computation is re-run with the two-way transformer from
``persam.method.guided`` (shared with the SAM 1 family). This runner never
uses the re-associated SAM 1 decoder (``fast_path=False``).
"""

from __future__ import annotations

import torch
from torch import nn

from persam.backends.base import Backend, EncodedImage
from persam.errors import IncompatibleError
from persam.method.guided import Guidance, guided_transformer
from persam.method.runner import DecoderPass, DecoderRunner

#: Bound of the low-resolution logits that ``SAM2ImagePredictor`` returns.
LOGIT_CLAMP = 32.0


def guided_predict_masks(
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    high_res: tuple[torch.Tensor, torch.Tensor],
    guidance: Guidance,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM 2's ``MaskDecoder.predict_masks`` re-run from its submodules with ``guidance``.

    Args:
        image_embeddings: (1, C, h, w), or (B, C, h, w) one image per prompt. image_pe: (1, C, h, w).
        sparse: (B, T', C). dense: (B, C, h, w).
        high_res: (1 or B, C/8, 4h, 4w) and (1 or B, C/4, 2h, 2w) skips.

    Returns:
        masks (B, 4, 4h, 4w), iou (B, 4), object-score logits (B, 1).
    """
    s = 1 if decoder.pred_obj_scores else 0
    parts = ([decoder.obj_score_token.weight] if s else []) + [decoder.iou_token.weight, decoder.mask_tokens.weight]
    out_tokens = torch.cat(parts, dim=0)
    b = sparse.shape[0]
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
    if image_embeddings.shape[0] == 1:
        image_embeddings = torch.repeat_interleave(image_embeddings, b, dim=0)
    src = image_embeddings + dense
    pos = torch.repeat_interleave(image_pe, b, dim=0)
    _, c, h, w = src.shape
    hs, keys = guided_transformer(decoder.transformer, src, pos, tokens, guidance)
    cells = keys.transpose(1, 2).reshape(b, c, h, w)
    if decoder.use_high_res_features:
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        feat_s0, feat_s1 = high_res
        upscaled = act2(dc2(act1(ln1(dc1(cells) + feat_s1))) + feat_s0)
    else:
        upscaled = decoder.output_upscaling(cells)
    n = decoder.num_mask_tokens
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, s + 1 + i, :]) for i in range(n)], dim=1)
    _, c2, h2, w2 = upscaled.shape
    masks = (hyper @ upscaled.view(b, c2, h2 * w2)).view(b, -1, h2, w2)
    iou = decoder.iou_prediction_head(hs[:, s, :])
    if s:
        obj = decoder.pred_obj_score_head(hs[:, 0, :])
    else:
        obj = 10.0 * iou.new_ones(b, 1)
    return masks, iou, obj


def _select(
    decoder: nn.Module, masks: torch.Tensor, iou: torch.Tensor, multimask: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``MaskDecoder.forward``'s choice of outputs (eval mode)."""
    if multimask:
        return masks[:, 1:], iou[:, 1:]
    if decoder.dynamic_multimask_via_stability:
        return decoder._dynamic_multimask_via_stability(masks, iou)
    return masks[:, 0:1], iou[:, 0:1]


def _sparse_points(
    points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Clicks and box as SAM 2's point prompts: box corners (labels 2, 3) first, then the clicks."""
    if boxes is None:
        return points
    corners = boxes.reshape(-1, 2, 2)
    corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(corners.shape[0], 1)
    if points is None:
        return corners, corner_labels
    return torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1].to(torch.int)], dim=1)


def predict_sam2(
    backend: Backend,
    encoded: EncodedImage,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
    multimask: bool,
    guidance: Guidance,
    exact: bool,
    best_only: bool = False,
) -> DecoderPass:
    """SAM 2's prompt encoder and decoder on a batch of prompts (see ``DecoderRunner.predict``).

    ``exact`` changes nothing: this family always runs the official modules.

    Raises:
        ValueError: the image was encoded without SAM 2's high-resolution features.
    """
    del exact
    if encoded.high_res_features is None:
        raise IncompatibleError(
            "this image was encoded by another model family (no SAM 2 high-resolution features); "
            "encode it with the SAM 2 model"
        )
    decoder = backend.mask_decoder
    sparse, dense = backend.prompt_encoder(points=_sparse_points(points, boxes), boxes=None, masks=masks)
    b = sparse.shape[0]
    high_res = encoded.high_res_features
    if guidance.active:
        logits, iou, obj = guided_predict_masks(
            decoder, encoded.embedding, backend.dense_pe(), sparse, dense, high_res, guidance
        )
        logits, iou = _select(decoder, logits, iou, multimask)
    else:
        logits, iou, _, obj = decoder(
            image_embeddings=encoded.embedding,
            image_pe=backend.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=b > 1 and encoded.embedding.shape[0] == 1,  # else one image per prompt
            high_res_features=list(high_res),
        )
    out = DecoderPass(logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP), iou, obj.reshape(b))
    return out.best() if best_only else out


SAM2_RUNNER = DecoderRunner(family="sam2", predict=predict_sam2, fast_path=False)
