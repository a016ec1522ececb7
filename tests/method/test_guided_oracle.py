"""persam's guided decoding against ``tests/oracles/guided_decoder.py``, an oracle that imports nothing of persam.

Both families (segment-anything's decoder, SAM 2.1's), each guidance off and on (target-guided attention,
target-semantic prompting, both). Tolerance: max |logit difference| <= ``ATOL`` (1e-5, fp32) for the official
order of operations (persam's ``guided_predict_masks`` and its SAM 2 runner); ``FAST_ATOL`` (1e-4) for the
SAM 1 family's re-associated fast decoder, whose sums run in another order. The oracle itself is first checked
against the official modules' own forward with the guidance off.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from conftest import synthetic_photo
from extras import require
from oracles import guided_decoder as oracle

ATOL = 1e-5  # fp32, same order of operations up to the attention's softmax arithmetic
FAST_ATOL = 1e-4  # the re-associated SAM 1 decoder (persam.method.factored)
GUIDANCES = {
    "plain": (False, False),
    "attention": (True, False),
    "semantic": (False, True),
    "both": (True, True),
}
#: The whole passes (prompt encoding, selection) run off and with both; each guidance alone runs at decoder level.
RUNNER_GUIDANCES = ["plain", "both"]
ORACLES = Path(__file__).resolve().parents[1] / "oracles"


def test_oracle_modules_import_nothing_of_persam():
    files = sorted(ORACLES.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "guided_decoder.py"}
    for file in files:
        tree = ast.parse(file.read_text(), filename=str(file))
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module",
                "__import__",
            ):
                names.append("<dynamic import>")
        bad = [n for n in names if n.split(".")[0] in ("persam", "<dynamic import>") or n.startswith(".")]
        assert not bad, f"{file.name} imports {bad}"


def _guidance(cells: int, channels: int, attention: bool, semantic: bool, seed: int):
    """(bias (h*w,) in (0, 1) like the reference's sigmoid map, or None; unit target embedding (C,), or None)."""
    g = torch.Generator().manual_seed(seed)
    bias = torch.rand(cells, generator=g) if attention else None
    target = torch.randn(channels, generator=g) if semantic else None
    return bias, None if target is None else target / target.norm()


def _persam_guidance(bias, target):
    from persam.method.guided import Guidance

    return Guidance(attention_bias=bias, target_embedding=target)


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ----------------------------------------------------------------------------- SAM 1 family


@pytest.fixture(scope="module")
def sam1():
    """segment-anything's official MaskDecoder / PromptEncoder classes, small and seeded."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.manual_seed(11)
    c, grid = 64, 16
    decoder = MaskDecoder(
        transformer_dim=c,
        transformer=TwoWayTransformer(depth=2, embedding_dim=c, mlp_dim=128, num_heads=8),
        iou_head_hidden_dim=64,
    ).eval()
    prompt_encoder = PromptEncoder(
        embed_dim=c, image_embedding_size=(grid, grid), input_image_size=(4 * 4 * grid, 4 * 4 * grid), mask_in_chans=16
    ).eval()
    g = torch.Generator().manual_seed(12)
    emb = torch.randn(1, c, grid, grid, generator=g)
    points = (torch.tensor([[[40.0, 70.0], [200.0, 30.0]]]), torch.tensor([[1, 0]]))
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=points, boxes=None, masks=None)
    return decoder, emb, prompt_encoder.get_dense_pe(), sparse, dense


def test_oracle_without_guidance_is_the_official_sam1_decoder(sam1):
    decoder, emb, pe, sparse, dense = sam1
    with torch.no_grad():
        official_masks, official_iou = decoder.predict_masks(emb, pe, sparse, dense)
        ours = oracle.decode_all(decoder, emb, pe, sparse, dense)
        for multimask in (False, True):
            want, want_iou = decoder(emb, pe, sparse, dense, multimask_output=multimask)
            got, got_iou = oracle.select(decoder, ours, multimask)
            assert _gap(got, want) <= ATOL and _gap(got_iou, want_iou) <= ATOL
    assert _gap(ours.masks, official_masks) <= ATOL and _gap(ours.iou, official_iou) <= ATOL


@pytest.mark.parametrize("name", list(GUIDANCES))
def test_sam1_guided_predict_masks_matches_the_oracle(sam1, name):
    from persam.method.sam1_runner import guided_predict_masks

    decoder, emb, pe, sparse, dense = sam1
    bias, target = _guidance(emb.shape[-2] * emb.shape[-1], emb.shape[1], *GUIDANCES[name], seed=13)
    with torch.no_grad():
        want = oracle.decode_all(decoder, emb, pe, sparse, dense, attn_sim=bias, target=target)
        masks, iou = guided_predict_masks(decoder, emb, pe, sparse, dense, _persam_guidance(bias, target))
        plain = oracle.decode_all(decoder, emb, pe, sparse, dense)
    gap = _gap(masks, want.masks)
    assert gap <= ATOL, f"{name}: max |logit diff| {gap:.2e} > {ATOL:.0e}"
    assert _gap(iou, want.iou) <= ATOL
    if name != "plain":  # so a persam that dropped it would fail above
        assert _gap(want.masks, plain.masks) > 100 * ATOL, name  # the guidance acts, far beyond the tolerance


def test_sam1_oracle_agrees_with_the_patched_reference_decoder(sam1):
    """Cross-check of two independent restatements: this oracle and ``reference_oracle``'s patched forwards."""
    from reference_oracle import reference_decoder

    decoder, emb, pe, sparse, dense = sam1
    bias, target = _guidance(emb.shape[-2] * emb.shape[-1], emb.shape[1], True, True, seed=14)
    with torch.no_grad():
        want = oracle.decode_all(decoder, emb, pe, sparse, dense, attn_sim=bias, target=target)
        with reference_decoder(decoder, bias.reshape(1, 1, 1, -1), target.reshape(1, 1, -1)):
            masks, iou = decoder.predict_masks(emb, pe, sparse, dense)
    assert _gap(masks, want.masks) <= ATOL and _gap(iou, want.iou) <= ATOL


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("name", RUNNER_GUIDANCES)
def test_sam1_runner_fast_and_exact_match_the_oracle(tiny_model, photo, name, multimask):
    """persam's whole SAM 1 pass (prompt encoder, fast re-associated decoder and exact one) on the tiny SAM."""
    from persam.method.decoder import predict

    backend = tiny_model.backend
    encoded = tiny_model.encode(photo[0])
    points = (torch.tensor([[[300.0, 200.0], [60.0, 500.0]]]), torch.tensor([[1, 0]]))
    h, w = encoded.embedding.shape[-2:]
    bias, target = _guidance(h * w, encoded.embedding.shape[1], *GUIDANCES[name], seed=15)
    with torch.no_grad():
        sparse, dense = backend.prompt_encoder(points=points, boxes=None, masks=None)
        decoder = backend.mask_decoder
        pe = backend.prompt_encoder.get_dense_pe()
        want, want_iou = oracle.select(
            decoder,
            oracle.decode_all(decoder, encoded.embedding, pe, sparse, dense, attn_sim=bias, target=target),
            multimask,
        )
        for exact, tol in ((True, ATOL), (False, FAST_ATOL)):
            out = predict(backend, encoded, points, None, None, multimask, _persam_guidance(bias, target), exact)
            gap = _gap(out.logits, want)
            assert gap <= tol * max(1.0, float(want.abs().max())), f"{name} exact={exact}: {gap:.2e}"
            assert _gap(out.iou, want_iou) <= tol


# ----------------------------------------------------------------------------- SAM 2 family


@pytest.fixture(scope="module")
def sam2_backend():
    require("sam2")
    import persam

    torch.manual_seed(21)
    return persam.load("sam2_tiny", random_weights=True, device="cpu").backend


@pytest.fixture(scope="module")
def sam2_encoded(sam2_backend):

    return sam2_backend.encode(synthetic_photo()[0])


@pytest.fixture(scope="module")
def sam2_inputs(sam2_backend):
    """Random image embedding and skips of the decoder's sizes; sparse/dense from the official prompt encoder."""
    decoder, prompt_encoder = sam2_backend.mask_decoder, sam2_backend.prompt_encoder
    h, w = prompt_encoder.image_embedding_size
    c = decoder.transformer_dim
    g = torch.Generator().manual_seed(22)
    emb = torch.randn(1, c, h, w, generator=g)
    high_res = (torch.randn(1, c // 8, 4 * h, 4 * w, generator=g), torch.randn(1, c // 4, 2 * h, 2 * w, generator=g))
    points = (torch.tensor([[[60.0, 90.0], [200.0, 30.0], [10.0, 10.0]]]), torch.tensor([[1, 0, 1]]))
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=points, boxes=None, masks=None)
    return emb, prompt_encoder.get_dense_pe(), sparse, dense, high_res


def test_oracle_without_guidance_is_the_official_sam2_decoder(sam2_backend, sam2_inputs):
    decoder = sam2_backend.mask_decoder
    emb, pe, sparse, dense, high_res = sam2_inputs
    assert decoder.pred_obj_scores and decoder.use_high_res_features and decoder.dynamic_multimask_via_stability
    with torch.no_grad():
        ours = oracle.decode_all(decoder, emb, pe, sparse, dense, high_res=high_res)
        masks, iou, _, obj = decoder.predict_masks(
            emb, pe, sparse, dense, repeat_image=True, high_res_features=high_res
        )
        assert _gap(ours.masks, masks) <= ATOL and _gap(ours.iou, iou) <= ATOL and _gap(ours.object_score, obj) <= ATOL
        for multimask in (False, True):
            want, want_iou, _, _ = decoder(emb, pe, sparse, dense, multimask, True, list(high_res))
            got, got_iou = oracle.select(decoder, ours, multimask)
            assert _gap(got, want) <= ATOL and _gap(got_iou, want_iou) <= ATOL


@pytest.mark.parametrize("name", list(GUIDANCES))
def test_sam2_guided_predict_masks_matches_the_oracle(sam2_backend, sam2_inputs, name):
    from persam.method.sam2_runner import guided_predict_masks

    decoder = sam2_backend.mask_decoder
    emb, pe, sparse, dense, high_res = sam2_inputs
    bias, target = _guidance(emb.shape[-2] * emb.shape[-1], emb.shape[1], *GUIDANCES[name], seed=23)
    with torch.no_grad():
        want = oracle.decode_all(decoder, emb, pe, sparse, dense, attn_sim=bias, target=target, high_res=high_res)
        masks, iou, obj = guided_predict_masks(
            decoder, emb, pe, sparse, dense, high_res, _persam_guidance(bias, target)
        )
        plain = oracle.decode_all(decoder, emb, pe, sparse, dense, high_res=high_res)
    gap = _gap(masks, want.masks)
    assert gap <= ATOL, f"{name}: max |logit diff| {gap:.2e} > {ATOL:.0e}"
    assert _gap(iou, want.iou) <= ATOL and _gap(obj, want.object_score) <= ATOL
    if name != "plain":
        assert _gap(want.masks, plain.masks) > 100 * ATOL, name  # the guidance acts, far beyond the tolerance


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("name", RUNNER_GUIDANCES)
def test_sam2_runner_matches_the_oracle(sam2_backend, sam2_encoded, name, multimask):
    """persam's whole SAM 2 pass (box as corner points first, prompt encoder, selection, clamp) on a real encoding."""
    from persam.method.decoder import predict

    encoded = sam2_encoded
    points = (torch.tensor([[[120.0, 80.0], [20.0, 200.0]]]), torch.tensor([[1, 0]]))
    box = torch.tensor([[90.0, 50.0, 180.0, 140.0]])
    h, w = encoded.embedding.shape[-2:]
    bias, target = _guidance(h * w, encoded.embedding.shape[1], *GUIDANCES[name], seed=24)
    decoder, prompt_encoder = sam2_backend.mask_decoder, sam2_backend.prompt_encoder
    with torch.no_grad():
        # SAM2ImagePredictor._predict: box corners (labels 2, 3) before the clicks, boxes=None
        corners = (torch.cat([box.reshape(1, 2, 2), points[0]], 1), torch.cat([torch.tensor([[2, 3]]), points[1]], 1))
        sparse, dense = prompt_encoder(points=corners, boxes=None, masks=None)
        decoded = oracle.decode_all(
            decoder,
            encoded.embedding,
            prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            attn_sim=bias,
            target=target,
            high_res=encoded.high_res_features,
        )
        want, want_iou = oracle.select(decoder, decoded, multimask)
        out = predict(sam2_backend, encoded, points, box, None, multimask, _persam_guidance(bias, target))
    gap = _gap(out.logits, want.clamp(-32, 32))
    assert gap <= ATOL * max(1.0, float(want.abs().max())), f"{name}: {gap:.2e}"
    assert _gap(out.iou, want_iou) <= ATOL
    assert _gap(out.object_score, decoded.object_score.reshape(-1)) <= ATOL
