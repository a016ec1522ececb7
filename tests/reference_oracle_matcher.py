"""An independent restatement of Matcher's one-shot procedure (aim-uofa/Matcher, ``matcher/Matcher.py``).

Imports nothing of persam. DINOv2 is transformers' implementation (Meta's
``dinov2`` package is not installable here) carrying the same weights; SAM is
segment-anything's ``SamPredictor`` around the official modules; the helpers
are segment-anything's ``utils.amg``, torchvision's NMS, SciPy's Hungarian
solver and POT's exact transport, as the authors use them. Random steps use
the global generators, seeded per photo as the authors seed their run
(``torch.manual_seed``, ``random.seed``).

The one adaptation, shared with persam: SAM runs on the photo at its own size
(the authors give SAM the 518 x 518 resize), so points of the 518 frame are
scaled by (W / 518, H / 518) before SAM's ``apply_coords``, and masks live in
photo pixels. Settings: ``scripts/fss.sh`` (the one-shot FSS-1000 command).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FSS = {
    "num_centers": 8,
    "use_points_or_centers": False,
    "sample_range": (4, 6),
    "max_sample_iterations": 30,
    "alpha": 0.8,
    "beta": 0.2,
    "exp": 1.0,
    "num_merging_mask": 10,
    "topk_scores_threshold": 0.7,
    "box_nms_thresh": 1.0,
}


def random_dinov2_state(seed: int, embed_dim: int, depth: int, num_heads: int) -> dict[str, torch.Tensor]:
    """A small DINOv2's weights in Meta's key layout (timm's ViT keys plus ``mask_token``), all random."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_small_patch14_dinov2", img_size=518, num_classes=0, embed_dim=embed_dim, depth=depth, num_heads=num_heads
    )
    state = {k: torch.randn_like(v) * 0.2 for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, embed_dim)
    return state


class OracleDino:
    """transformers' Dinov2Model with Meta-layout weights; ``features`` = pre-norm patch tokens at 518 px."""

    def __init__(self, state: dict[str, torch.Tensor], num_heads: int) -> None:
        from transformers import Dinov2Config, Dinov2Model

        c = state["cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        cfg = Dinov2Config(
            hidden_size=c,
            num_hidden_layers=depth,
            num_attention_heads=num_heads,
            mlp_ratio=hidden // c,
            image_size=518,
            patch_size=14,
            layerscale_value=1e-5,
            layer_norm_eps=1e-6,
        )
        self.model = Dinov2Model(cfg).eval()
        mapped = {
            "embeddings.cls_token": state["cls_token"],
            "embeddings.mask_token": state["mask_token"],
            "embeddings.position_embeddings": state["pos_embed"],
            "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
            "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
            "layernorm.weight": state["norm.weight"],
            "layernorm.bias": state["norm.bias"],
        }
        for i in range(depth):
            b, o = f"blocks.{i}.", f"encoder.layer.{i}."
            qw, kw, vw = state[b + "attn.qkv.weight"].chunk(3)
            qb, kb, vb = state[b + "attn.qkv.bias"].chunk(3)
            for name, w, bias in (("q_proj", qw, qb), ("k_proj", kw, kb), ("v_proj", vw, vb)):
                mapped[o + f"attention.{name}.weight"] = w
                mapped[o + f"attention.{name}.bias"] = bias
            pairs = {
                "norm1": "norm1",
                "norm2": "norm2",
                "attention.o_proj": "attn.proj",
                "mlp.fc1": "mlp.fc1",
                "mlp.fc2": "mlp.fc2",
            }
            for theirs, meta in pairs.items():
                mapped[o + theirs + ".weight"] = state[b + meta + ".weight"]
                mapped[o + theirs + ".bias"] = state[b + meta + ".bias"]
            mapped[o + "layer_scale1.lambda1"] = state[b + "ls1.gamma"]
            mapped[o + "layer_scale2.lambda1"] = state[b + "ls2.gamma"]
        missing, unexpected = self.model.load_state_dict(mapped, strict=False)
        assert not unexpected and not [m for m in missing if "mask_token" not in m], (missing, unexpected)

    def features(self, photo: np.ndarray) -> torch.Tensor:
        from PIL import Image
        from torchvision import transforms

        tf = transforms.Compose(
            [
                transforms.Resize((518, 518)),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )
        x = tf(Image.fromarray(photo))[None]
        with torch.no_grad():
            out = self.model(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[-1][0, 1:]


def combinations(n: int, k: int) -> list[list[int]]:
    """The authors' recursive k-subsets of range(n)."""
    if k > n:
        return []
    if k == 0:
        return [[]]
    if k == n:
        return [list(range(n))]
    return [j + [i] for i in range(n) for j in combinations(i, k - 1)]


def kmeans_pp(x: np.ndarray, k: int, max_iters: int = 100):
    """The authors' k-means++ (global torch generator)."""
    x = torch.from_numpy(x).float()
    centers = x[torch.randint(x.size(0), (1,))]
    for _ in range(k - 1):
        d = torch.cdist(x, centers).min(dim=1).values + 1e-6
        idx = torch.multinomial(d**2 / torch.sum(d**2), num_samples=1)
        centers = torch.cat([centers, x[idx]], dim=0)
    for _ in range(max_iters):
        assign = torch.argmin(torch.cdist(x, centers), dim=1)
        new = []
        for j in range(k):
            new.append(x[assign == j].mean(0) if torch.sum(assign == j) > 0 else centers[j])
        new = torch.stack(new)
        if torch.all(torch.eq(new, centers)):
            break
        centers = new.clone()
    return centers, assign


def inter_area_positive(mask: np.ndarray, side: int = 37) -> np.ndarray:
    """OpenCV's INTER_AREA downscale of a 0/1 mask to side x side, > 0 (fractional weights, 1e-3 rule)."""

    def table(n: int) -> list[list[tuple[int, float]]]:
        s = n / side
        rows = []
        for j in range(side):
            f1, f2 = j * s, (j + 1) * s
            c1, c2 = int(np.ceil(f1)), int(np.floor(f2))
            taps = [(i, 1.0) for i in range(c1, c2)]
            if c1 - f1 > 1e-3:
                taps.append((c1 - 1, c1 - f1))
            if f2 - c2 > 1e-3 and c2 < n:
                taps.append((c2, f2 - c2))
            rows.append(taps)
        return rows

    h, w = mask.shape
    ty, tx = table(h), table(w)
    m = mask.astype(np.float64)
    out = np.zeros((side, side))
    for a, taps_y in enumerate(ty):
        row = sum(wy * m[i] for i, wy in taps_y)
        for b, taps_x in enumerate(tx):
            out[a, b] = sum(wx * row[i] for i, wx in taps_x)
    return out > 0


@dataclass
class OracleResult:
    mask: np.ndarray
    points: np.ndarray
    n_masks: int


def run_matcher(sam, dino: OracleDino, ref: np.ndarray, ref_mask: np.ndarray, target: np.ndarray, seed: int = 0):
    """Matcher's one-shot prediction of ``target``'s mask (H, W) bool, restated step by step."""
    import ot
    from scipy.optimize import linear_sum_assignment
    from segment_anything import SamPredictor
    from segment_anything.utils.amg import batched_mask_to_box
    from torchvision.ops import batched_nms

    cfg = FSS
    torch.manual_seed(seed)
    random.seed(seed)
    # reference cells
    m = F.interpolate(torch.from_numpy(ref_mask).float()[None, None], (518, 518), mode="nearest")
    pool = (F.avg_pool2d(m, (14, 14)) > 0).float().reshape(-1)
    ref_f = F.normalize(dino.features(ref), dim=1, p=2)
    tar_f = F.normalize(dino.features(target), dim=1, p=2)
    # patch-level matching
    S = ref_f @ tar_f.t()
    C = (1 - S) / 2
    S_fwd = S[pool.bool()]
    fwd = [torch.as_tensor(i, dtype=torch.int64) for i in linear_sum_assignment(S_fwd, maximize=True)]
    sim_f = S_fwd[fwd[0], fwd[1]]
    inside = pool.nonzero()[:, 0]
    rev = [torch.as_tensor(i, dtype=torch.int64) for i in linear_sum_assignment(S.t()[fwd[1]], maximize=True)]
    retain = torch.isin(rev[1], inside)
    if not (retain == False).all().item():  # noqa: E712 - the authors' test
        fwd = [fwd[0][retain], fwd[1][retain]]
        sim_f = sim_f[retain]
    n = len(sim_f) // 2 if len(sim_f) > 40 else len(sim_f)
    idx = torch.sort(sim_f, descending=True)[1][:n]
    chosen = torch.tensor(list(set(fwd[1][idx].tolist())))
    xs = (chosen % 37 * 14 + 7).tolist()
    ys = (chosen // 37 * 14 + 7).tolist()
    all_points = np.array([[int(x), int(y)] for x, y in zip(xs, ys) if int(x) < 518 and int(y) < 518])
    # clustering
    k = min(cfg["num_centers"], len(all_points))
    while True:
        centers, assign = kmeans_pp(all_points, k)
        if torch.unique(assign).shape[0] == k:
            break
    points = np.array(centers).astype(np.int64)
    # robust prompt sampling
    samples = []
    lo, hi = cfg["sample_range"]
    for i in range(min(lo, len(points)), min(hi, len(points)) + 1):
        if len(points) > 8:
            index = [random.sample(range(len(points)), i) for _ in range(cfg["max_sample_iterations"])]
        else:
            index = combinations(len(points), i)
        samples.append(np.take(points, index, axis=0))
    # SAM's masks (on the photo at its size)
    h, w = target.shape[:2]
    scale = np.array([w / 518, h / 518])
    predictor = SamPredictor(sam)
    predictor.set_image(target)
    masks, ious, lows = [], [], []
    for group in samples:
        for s in range(0, len(group), 64):
            pts = group[s : s + 64] * scale
            coords = torch.as_tensor(predictor.transform.apply_coords(pts, (h, w)), dtype=torch.float)
            labels = torch.ones(coords.shape[:2], dtype=torch.int)
            with torch.no_grad():
                mk, iou, low = predictor.predict_torch(coords, labels, multimask_output=False, return_logits=True)
            masks.append(mk[:, 0] > sam.mask_threshold)
            ious.append(iou[:, 0])
            lows.append(low[:, 0])
    masks, ious = torch.cat(masks), torch.cat(ious)
    keep = batched_nms(batched_mask_to_box(masks).float(), ious, torch.zeros(len(ious)), cfg["box_nms_thresh"])
    masks = masks[keep].numpy()
    # instance-level matching
    all_photo = (all_points * scale).astype(int)
    all_photo = np.clip(all_photo[:, ::-1], 0, [h - 1, w - 1])
    emd = torch.zeros(len(masks))
    purity = torch.zeros(len(masks))
    coverage = torch.zeros(len(masks))
    for i, mk in enumerate(masks):
        small = inter_area_positive(mk)
        if not small.any():
            small = np.ones_like(small)
        cost = C[pool.bool(), :][:, torch.from_numpy(small.flatten())]
        emd[i] = 1 - ot.emd2(
            a=[1.0 / cost.shape[0]] * cost.shape[0], b=[1.0 / cost.shape[1]] * cost.shape[1], M=cost.numpy()
        )
        n_in = int(mk[all_photo[:, 0], all_photo[:, 1]].sum())
        purity[i] = torch.tensor([n_in / max(float(small.sum()), 1.0)]) + 1e-6
        coverage[i] = torch.tensor([n_in / all_points.shape[0]]) + 1e-6
    scores = cfg["alpha"] * emd + cfg["beta"] * purity * coverage ** cfg["exp"]
    topk = min(cfg["num_merging_mask"], scores.size(0))
    top = scores.topk(topk)[1]
    top_scores = scores[top].numpy()
    top_scores = top_scores / top_scores.max()
    sel = top[torch.from_numpy(top_scores > cfg["topk_scores_threshold"])]
    return OracleResult(mask=masks[sel.numpy()].sum(0) > 0, points=points, n_masks=len(masks))
