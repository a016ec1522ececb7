import math

import pytest
import torch

from persam.backends.builders import build_parts
from persam.method.decoder import Guidance, Prompt, attention, decode, guided_predict_masks


def build_sam_tiny():
    return build_parts("sam_tiny")


def build_mobile_sam():
    return build_parts("vit_t")


def _inputs(decoder, prompt_encoder, n_tokens=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = decoder.transformer_dim
    h, w = prompt_encoder.image_embedding_size
    emb = torch.randn(1, c, h, w, generator=g)
    sparse = torch.randn(1, n_tokens, c, generator=g)
    dense = torch.randn(1, c, h, w, generator=g)
    return emb, prompt_encoder.get_dense_pe(), sparse, dense


@pytest.mark.parametrize("builder", [build_sam_tiny, build_mobile_sam], ids=["segment_anything", "mobile_sam"])
def test_unguided_equals_official_decoder(builder):
    torch.manual_seed(0)
    _, prompt_encoder, decoder, _ = builder()
    decoder.eval()
    args = _inputs(decoder, prompt_encoder)
    with torch.no_grad():
        masks, iou = decoder.predict_masks(*args)
        ours, ours_iou = guided_predict_masks(decoder, *args, Guidance())
    assert torch.allclose(ours, masks, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours_iou, iou, atol=1e-6, rtol=1e-5)


def test_guided_attention_against_hand_computation():
    torch.manual_seed(1)
    _, _, decoder, _ = build_sam_tiny()
    module = decoder.transformer.layers[0].cross_attn_token_to_image
    q, k, v = torch.randn(1, 2, 32), torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    bias = torch.rand(5)
    with torch.no_grad():
        got = attention(module, q, k, v, bias)
        # By hand: per head, A = softmax(QK^T / sqrt(d)), A_g = softmax(A + bias), out = A_g V.
        Q, K, V = module.q_proj(q)[0], module.k_proj(k)[0], module.v_proj(v)[0]
        heads, d = module.num_heads, Q.shape[1] // module.num_heads
        outs = []
        for hd in range(heads):
            qs, ks, vs = (x[:, hd * d : (hd + 1) * d] for x in (Q, K, V))
            logits = qs @ ks.T / math.sqrt(d)
            a = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
            ag = torch.exp(a + bias) / torch.exp(a + bias).sum(1, keepdim=True)
            outs.append(ag @ vs)
        want = module.out_proj(torch.cat(outs, dim=1))[None]
        plain = attention(module, q, k, v, None)
        official = module(q=q, k=k, v=v)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(plain, official, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-4)


def test_each_guidance_changes_the_first_pass():
    torch.manual_seed(2)
    _, prompt_encoder, decoder, _ = build_sam_tiny()
    args = _inputs(decoder, prompt_encoder)
    h, w = prompt_encoder.image_embedding_size
    with torch.no_grad():
        plain, _ = guided_predict_masks(decoder, *args, Guidance())
        biased, _ = guided_predict_masks(decoder, *args, Guidance(attention_bias=torch.rand(h * w)))
        prompted, _ = guided_predict_masks(decoder, *args, Guidance(target_embedding=torch.randn(32)))
    assert (biased - plain).abs().max() > 1e-4
    assert (prompted - plain).abs().max() > 1e-4


def test_decode_shapes(tiny_model, photo):
    enc = tiny_model.encode(photo[0])
    prompt = Prompt(points_xy=torch.tensor([[100.0, 80.0]]), labels=torch.tensor([1]))
    single = decode(tiny_model.backend, enc, prompt, multimask=False)
    multi = decode(tiny_model.backend, enc, prompt, multimask=True)
    assert single.low_res_logits.shape == (1, 64, 64) and single.iou.shape == (1,)
    assert multi.low_res_logits.shape == (3, 64, 64) and multi.iou.shape == (3,)
    logits, score = multi.best()
    assert score == pytest.approx(float(multi.iou.max()))


@pytest.mark.parametrize("builder", [build_sam_tiny, build_mobile_sam], ids=["segment_anything", "mobile_sam"])
@pytest.mark.parametrize("multimask", [True, False])
def test_factored_decoder_equals_the_official_submodules(builder, multimask):
    """The re-associated decoder == the submodule re-run, with and without guidance, batched,
    for each kind of dense embedding: SAM's no-mask vector, a shared dense map, mask rows."""
    from persam.method import factored, first_block

    torch.manual_seed(3)
    _, prompt_encoder, decoder, _ = builder()
    decoder.eval()
    assert factored.supports(decoder)
    emb, pe, sparse, dense = _inputs(decoder, prompt_encoder, n_tokens=4)
    sparse = torch.cat([sparse, torch.randn_like(sparse)])  # two prompts
    h, w = prompt_encoder.image_embedding_size
    c = decoder.transformer_dim
    sl = slice(1, None) if multimask else slice(0, 1)
    plain = first_block.first_block(emb, pe.permute(0, 2, 3, 1).reshape(1, h * w, c))
    projected = first_block.project_first_block(decoder, plain)
    assert projected.projected and not plain.projected
    masks = torch.randn(2, 1, 4 * h, 4 * w) * 5
    vector = prompt_encoder.no_mask_embed.weight[0]
    with torch.no_grad():
        denses = {
            "no-mask vector": (first_block.Dense(vector=vector), vector.view(1, c, 1, 1).expand(2, c, h, w)),
            "shared map": (
                first_block.Dense(rows=dense.permute(0, 2, 3, 1).reshape(1, h * w, c), weight=torch.eye(c)),
                dense.expand(2, -1, -1, -1),
            ),
            "mask rows": (first_block.mask_rows(prompt_encoder, masks), prompt_encoder._embed_masks(masks)),
        }
        cases = [Guidance(), Guidance(attention_bias=torch.rand(h * w), target_embedding=torch.randn(c))]
        for name, (ours, official) in denses.items():
            for guidance in cases:
                want, want_iou = guided_predict_masks(decoder, emb, pe, sparse, official, guidance)
                for first in (plain, projected):
                    got, got_iou = factored.predict_masks(
                        decoder,
                        first,
                        sparse,
                        ours,
                        multimask,
                        attention_bias=guidance.attention_bias,
                        target_embedding=guidance.target_embedding,
                    )
                    assert got.shape == want[:, sl].shape, name
                    scale = want.abs().max()
                    assert (got - want[:, sl]).abs().max() <= 1e-4 * scale, (name, first.projected)
                    torch.testing.assert_close(got_iou, want_iou[:, sl], atol=1e-5, rtol=1e-4)


def test_fast_and_exact_decode_agree_and_other_decoders_are_not_factored(tiny_model, photo):
    from fakes import ColorRegionDecoder
    from persam.method import factored

    assert not factored.supports(ColorRegionDecoder())
    enc = tiny_model.encode(photo[0])
    prompt = Prompt(points_xy=torch.tensor([[100.0, 80.0]]), labels=torch.tensor([1]))
    fast = decode(tiny_model.backend, enc, prompt, multimask=True)
    exact = decode(tiny_model.backend, enc, prompt, multimask=True, exact=True)
    torch.testing.assert_close(fast.low_res_logits, exact.low_res_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.iou, exact.iou, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("builder", [build_sam_tiny, build_mobile_sam], ids=["segment_anything", "mobile_sam"])
def test_mask_rows_equal_the_official_downscaling(builder):
    from persam.method import first_block

    torch.manual_seed(4)
    _, prompt_encoder, _, _ = builder()
    prompt_encoder.eval()
    assert first_block.supports_mask_embedding(prompt_encoder)
    h, w = prompt_encoder.image_embedding_size
    masks = torch.randn(2, 1, 4 * h, 4 * w) * 5
    with torch.no_grad():
        want = prompt_encoder._embed_masks(masks)
        dense = first_block.mask_rows(prompt_encoder, masks)
    want_cells = want.permute(0, 2, 3, 1).reshape(2, h * w, -1)
    torch.testing.assert_close(dense.rows @ dense.weight, want_cells, atol=1e-5, rtol=1e-5)
    assert dense.rows.shape[-1] == prompt_encoder.mask_downscaling[6].in_channels + 1  # few columns


def test_first_block_products_come_with_the_first_batch_and_stay_with_the_image(tiny_model, photo):
    """Single prompts run without the first-block products; a batch computes them once for the
    image, later passes reuse them with the same masks; a new embedding starts again."""
    from persam.method.decoder import FIRST_BLOCK, predict

    backend = tiny_model.backend
    enc = tiny_model.encode(photo[0])
    never = lambda emb: pytest.fail("recomputed")  # noqa: E731
    prompt = Prompt(points_xy=torch.tensor([[30.0, 40.0]]), labels=torch.tensor([1]))
    single = decode(backend, enc, prompt, multimask=True)
    assert not enc.derived(FIRST_BLOCK, never).projected
    xy = enc.geometry.to_model_xy(torch.tensor([[[30.0, 40.0]], [[100.0, 80.0]]]))
    with torch.no_grad():
        batch = predict(backend, enc, (xy, torch.ones(2, 1, dtype=torch.int)), None, None, multimask=True).logits
    first = enc.derived(FIRST_BLOCK, never)
    assert first.projected
    again = decode(backend, enc, prompt, multimask=True)
    assert enc.derived(FIRST_BLOCK, never) is first
    torch.testing.assert_close(again.low_res_logits, single.low_res_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch[0], single.low_res_logits, atol=1e-5, rtol=1e-4)
    enc.forget_derived()
    decode(backend, enc, prompt, multimask=True)
    assert not enc.derived(FIRST_BLOCK, never).projected


def test_re_associated_pass_does_less_arithmetic_than_the_official_modules():
    """Counted by torch's FLOP counter on MobileSAM's full-size decoder (no timing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from persam.backends.base import Backend, EncodedImage, ImageGeometry, Preprocessing

    torch.manual_seed(5)
    image_encoder, prompt_encoder, decoder, _ = build_mobile_sam()
    backend = Backend("vit_t", image_encoder, prompt_encoder, decoder, Preprocessing(1024), torch.device("cpu"))
    geometry = ImageGeometry.for_image((768, 1024), 1024, (64, 64))
    enc = EncodedImage(torch.randn(1, 256, 64, 64), geometry)
    prompt = Prompt(
        points_xy=torch.tensor([[300.0, 200.0], [500.0, 400.0]]),
        labels=torch.tensor([1, 1]),
        box_xyxy=torch.tensor([250.0, 150.0, 600.0, 450.0]),
        mask_logits=torch.randn(256, 256),
    )
    flops = {}
    for exact in (False, True):
        with FlopCounterMode(display=False) as counter:
            decode(backend, enc, prompt, multimask=True, exact=exact)
        flops[exact] = counter.get_total_flops()
    assert flops[False] < 0.7 * flops[True], flops


@pytest.mark.parametrize("multimask, final_tokens", [(False, 2), (True, 4)])
def test_only_the_used_tokens_go_through_the_final_attention(multimask, final_tokens, monkeypatch):
    """The IoU token and the chosen mask tokens: 2 for one mask, 4 for three (not the prompt tokens)."""
    from persam.method import factored, first_block

    torch.manual_seed(3)
    _, prompt_encoder, decoder, _ = build_sam_tiny()
    decoder.eval()
    emb, pe, sparse, _ = _inputs(decoder, prompt_encoder, n_tokens=4)
    h, w = prompt_encoder.image_embedding_size
    c = decoder.transformer_dim
    plain = first_block.first_block(emb, pe.permute(0, 2, 3, 1).reshape(1, h * w, c))
    cells = plain.image.expand(sparse.shape[0], -1, -1)
    out = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    final = decoder.transformer.final_attn_token_to_image
    seen = []
    real = factored.token_to_image

    def counting(module, q, *args):
        if module is final:
            seen.append(q.shape[1])
        return real(module, q, *args)

    monkeypatch.setattr(factored, "token_to_image", counting)
    dense = first_block.Dense(vector=prompt_encoder.no_mask_embed.weight[0])
    with torch.no_grad():
        full, _ = factored.two_way(decoder.transformer, cells, plain.key_pe, tokens, None, None)
        part, _ = factored.two_way(decoder.transformer, cells, plain.key_pe, tokens, None, None, outputs=[0, 2, 3])
        factored.predict_masks(decoder, plain, sparse, dense, multimask)
    torch.testing.assert_close(part, full[:, [0, 2, 3]], atol=1e-6, rtol=1e-5)
    assert seen == [tokens.shape[1], 3, final_tokens]


@pytest.mark.parametrize("batch", [1, 3])
def test_first_block_cells_are_the_embedding_in_row_major_cell_order(batch):
    from persam.method import first_block

    emb = torch.randn(batch, 16, 4, 5)
    pe = torch.randn(1, 20, 16)
    for given in (emb, emb.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)):  # also a strided embedding
        first = first_block.first_block(given, pe)
        # cell (y, x) is row y * w + x, channels along the row: exactly the embedding's values
        assert torch.equal(first.image, emb.permute(0, 2, 3, 1).reshape(batch, 20, 16))
        assert first.image.is_contiguous() and first.grid_hw == (4, 5)
