"""The SAM 1 family's decoder runner (segment-anything's ``MaskDecoder``: SAM, MobileSAM, LiteMedSAM).

Tokens [IoU, 4 mask tokens, prompts]; no object score. Without guidance
the official ``predict_masks`` runs; with it, ``guided_predict_masks``
re-runs it from its submodules (``persam.method.guided``). This family, and
only this one, declares the re-associated fast decoder
(``persam.method.factored``, ``first_block``): another family's decoder is
never given to it, even when its transformer looks alike.
"""

from __future__ import annotations

import torch
from torch import nn

from persam.backends.base import Backend, EncodedImage
from persam.method import factored, first_block
from persam.method.guided import Guidance, guided_transformer
from persam.method.runner import DecoderPass, DecoderRunner

#: ``EncodedImage.derived`` key of the image's ``first_block.FirstBlock``.
FIRST_BLOCK = "persam.factored.first_block"
#: Batches of at least this many prompts make the image's first-block products
#: (``first_block.project_first_block``) worth computing: the video protocol's
#: several objects per frame; single prompts (photos: 3-4 passes) go without.
PROJECT_FROM_BATCH = 2


def guided_predict_masks(
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    guidance: Guidance,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` re-run from its submodules with ``guidance``.

    Shapes as the official method: embeddings (1, C, h, w), sparse (B, N, C),
    dense (B, C, h, w) -> masks (B, 4, 4h, 4w), iou (B, 4); or embeddings
    (B, C, h, w), one image per prompt (photos decoded together).
    """
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    if image_embeddings.shape[0] == 1:
        image_embeddings = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
    src = image_embeddings + dense
    pos = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    hs, keys = guided_transformer(decoder.transformer, src, pos, tokens, guidance)
    upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
    n = decoder.num_mask_tokens
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in range(n)], dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, decoder.iou_prediction_head(hs[:, 0, :])


def _fast(
    backend: Backend,
    encoded: EncodedImage,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
    multimask: bool,
    guidance: Guidance,
    best_only: bool,
) -> DecoderPass:
    encoder, decoder = backend.prompt_encoder, backend.mask_decoder
    first = encoded.derived(FIRST_BLOCK, lambda emb: first_block.first_block(emb, backend.dense_pe_cells()))
    given = points[0] if points is not None else boxes if boxes is not None else masks
    batch = 1 if given is None else given.shape[0]
    one_image = first.image.shape[0] == 1  # else a batch of photos, one per prompt
    if one_image and not first.projected and batch >= PROJECT_FROM_BATCH:  # kept for the image's later passes
        first = encoded.derived(FIRST_BLOCK, lambda emb: first_block.project_first_block(decoder, first), replace=True)
    if masks is None:
        sparse, _ = encoder(points=points, boxes=boxes, masks=None)
        dense = first_block.Dense(vector=encoder.no_mask_embed.weight[0])
    else:
        # batch size from the masks when there is no point or box, as the official encoder
        sparse, _ = encoder(points=points, boxes=boxes, masks=masks if points is None and boxes is None else None)
        dense = first_block.mask_rows(encoder, masks)
    logits, iou = factored.predict_masks(
        decoder,
        first,
        sparse,
        dense,
        multimask,
        attention_bias=guidance.attention_bias,
        target_embedding=guidance.target_embedding,
        best_only=best_only,
    )
    return DecoderPass(logits, iou)


def fast_path_fits(backend: Backend) -> bool:
    """Whether the backend's decoder and prompt encoder have the structure the re-associated decoder needs."""
    return factored.supports(backend.mask_decoder) and first_block.supports_mask_embedding(backend.prompt_encoder)


def predict_sam1(
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
    """The SAM 1 family's prompt encoder and decoder on a batch of prompts (see ``DecoderRunner.predict``).

    With ``best_only`` the re-associated decoder upscales each prompt's best mask alone; the official
    modules choose it after the pass.
    """
    if not exact and fast_path_fits(backend):
        return _fast(backend, encoded, points, boxes, masks, multimask, guidance, best_only)
    encoder, decoder = backend.prompt_encoder, backend.mask_decoder
    sparse, dense = encoder(points=points, boxes=boxes, masks=masks)
    if dense.shape[0] != sparse.shape[0]:  # no mask prompt: one broadcast dense embedding
        dense = dense.expand(sparse.shape[0], -1, -1, -1)
    args = (encoded.embedding, backend.dense_pe(), sparse, dense)
    if guidance.active or encoded.embedding.shape[0] > 1:  # the official method repeats one image only
        logits, iou = guided_predict_masks(decoder, *args, guidance)
    else:
        logits, iou = decoder.predict_masks(*args)
    sl = slice(1, None) if multimask else slice(0, 1)
    out = DecoderPass(logits[:, sl], iou[:, sl])
    return out.best() if best_only else out


SAM1_RUNNER = DecoderRunner(family="sam", predict=predict_sam1, fast_path=True)
