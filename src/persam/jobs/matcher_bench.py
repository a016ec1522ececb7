"""``persam bench --prior matcher``: the matcher prior's cost against PerSAM's, in one interleaved run.

On two deterministic synthetic photos (``persam.jobs.synthetic.synthetic_photo``,
N x round(0.75 N)) a training-free PerSAM concept and a matcher concept are
learned from the first; the second is encoded once by SAM and once by DINOv2
(its features kept with the embedding, as an album index keeps them). Each
round (round 0 warms up) times, one call each:

* ``encoder_s``: SAM's image encoder on the photo;
* ``dino_encoder_s``: DINOv2 on the photo (518 x 518 input);
* ``persam_extra_s``: ``concept.segment(encoded)`` of the PerSAM concept, full-resolution mask included;
* ``matcher_extra_s``: the same for the matcher concept (no encoder runs: the features are stored);

then one more, untimed-as-a-stage run of the matcher's method steps records
where its time goes (patch matching and prompt sampling, SAM's masks for the
sampled prompts, the transport scoring, the merge). Decoder passes are
counted as the rows through the mask decoder's IoU head (one per prompt).
Every call starts without the photo's per-image products
(``EncodedImage.forget_derived``), as for a new photo. Figures are medians
over the rounds; the target of issue 27 is ``matcher_over_persam`` <= 10.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from persam.jobs.timing import seconds

#: The cost target: the matcher prior beyond the encoders at most this many times PerSAM's.
TARGET_RATIO = 10.0
#: The matcher's method steps timed in the breakdown, in order.
STEPS = ("match_s", "decode_s", "transport_s", "merge_s")


@dataclass(frozen=True)
class MatcherBenchResult:
    """Median timings (seconds), counts and the setting they were measured in.

    Attributes:
        model: SAM backend name. dino: DINOv2 name. random_weights: no trained weights (speed only).
        image_hw: (H, W) of the photos. precision: SAM's encoder precision. device: torch device.
        torch_version, threads: as measured.
        runs: timed rounds after the warm-up.
        encoder_s, dino_encoder_s: SAM's and DINOv2's encoder on one photo.
        persam_extra_s, matcher_extra_s: each prior on the encoded photo (beyond both encoders).
        persam_decoder_passes: prompts through SAM's decoder for PerSAM on one photo.
        matcher_decoder_prompts, matcher_decoder_calls: the same for the matcher, and its batched calls.
        transport_problems: distinct transport problems the matcher solved on the photo.
        match_s, decode_s, transport_s, merge_s: the matcher's method steps (medians of the breakdown runs).
    """

    model: str
    dino: str
    random_weights: bool
    image_hw: tuple[int, int]
    precision: str
    device: str
    torch_version: str
    threads: int
    runs: int
    encoder_s: float
    dino_encoder_s: float
    persam_extra_s: float
    matcher_extra_s: float
    persam_decoder_passes: int
    matcher_decoder_prompts: int
    matcher_decoder_calls: int
    transport_problems: int
    match_s: float
    decode_s: float
    transport_s: float
    merge_s: float

    @property
    def matcher_over_persam(self) -> float:
        """The matcher's cost beyond the encoders over PerSAM's."""
        return self.matcher_extra_s / self.persam_extra_s if self.persam_extra_s > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        out["image_hw"] = list(self.image_hw)
        out["matcher_over_persam"] = self.matcher_over_persam
        out["target_ratio"] = TARGET_RATIO
        return out


class DecoderCount:
    """Counts the prompts through a SAM decoder (rows into its IoU head) while active."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.head = decoder.iou_prediction_head
        self.rows = 0

    def __enter__(self) -> DecoderCount:
        def hook(module, args, output) -> None:
            self.rows += int(args[0].shape[0])

        self.handle = self.head.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def breakdown(backend, encoded, reference, features: torch.Tensor) -> tuple[dict[str, float], int, int]:
    """One run of the matcher's method steps: each step's seconds, the distinct transport problems and the
    batched decoder calls."""
    from persam.method import matcher_select as ms
    from persam.method.matcher import match_patches, prompt_points

    laps: dict[str, float] = {}
    start = time.perf_counter()
    matches = match_patches(reference, features)
    points, samples = prompt_points(matches, reference.settings)
    laps["match_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cands = ms.decode_candidates(backend, encoded, samples, matches.points, reference.settings)
    laps["decode_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chosen = ms.select(cands, matches, reference.pooled, reference.settings)
    laps["transport_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ms.merge(cands, chosen.chosen, encoded, points)
    laps["merge_s"] = time.perf_counter() - start
    problems = len({c.numpy().tobytes() for c in cands.cells})
    return laps, problems, cands.decoder_calls


def run_matcher_bench(
    model: str = "vit_t",
    checkpoint: str | None = None,
    *,
    dino: str | None = None,
    device: str | None = None,
    random_weights: bool = False,
    image_size: int = 1024,
    runs: int = 3,
    on_stage: Callable[[str], None] | None = None,
) -> MatcherBenchResult:
    """Load SAM and DINOv2 and time both priors in interleaved rounds (see the module docstring)."""
    from persam.backends.dinov2 import DEFAULT_DINO
    from persam.jobs.synthetic import synthetic_photo
    from persam.session.features import dino_array
    from persam.session.photo import load

    stage = on_stage or (lambda name: None)
    dino = dino or DEFAULT_DINO
    ref_image, ref_mask = synthetic_photo(image_size, seed=0, center=(0.42, 0.52), axes=(0.2, 0.26))
    tgt_image, _ = synthetic_photo(image_size, seed=1, center=(0.6, 0.45), axes=(0.18, 0.24))
    stage("loading the models")
    with torch.random.fork_rng(devices=[]):
        if random_weights:
            torch.manual_seed(0)
        session = load(model, checkpoint, device=device, random_weights=random_weights, progress=False, dino=dino)
        backbone = session.feature_backbone()
    backend = session.backend
    persam_concept = session.personalize(ref_image, ref_mask)
    matcher_concept = session.personalize(ref_image, ref_mask, prior="matcher")
    encoded = session.encode(tgt_image)
    stored = dataclasses.replace(encoded, features={"dinov2": dino_array(backbone, tgt_image)})
    unit = torch.nn.functional.normalize(stored.features["dinov2"][0].float(), dim=1, p=2)

    def fresh(image):
        image.forget_derived()
        return image

    stages: dict[str, Callable[[], object]] = {
        "encoder_s": lambda: backend.encode(tgt_image),
        "dino_encoder_s": lambda: backbone.encode(tgt_image),
        "persam_extra_s": lambda: persam_concept.segment(fresh(encoded)),
        "matcher_extra_s": lambda: matcher_concept.segment(fresh(stored)),
    }
    times: dict[str, list[float]] = {name: [] for name in (*stages, *STEPS)}
    problems = calls = 0
    for round_ in range(runs + 1):
        stage("warm-up" if round_ == 0 else f"round {round_}/{runs}")
        for name, fn in stages.items():
            elapsed = seconds(fn, backend.device)
            if round_:
                times[name].append(elapsed)
        laps, problems, calls = breakdown(backend, fresh(stored), matcher_concept.matcher, unit)
        if round_:
            for name in STEPS:
                times[name].append(laps[name])
    with DecoderCount(backend.mask_decoder) as persam_count:
        persam_concept.segment(fresh(encoded))
    with DecoderCount(backend.mask_decoder) as matcher_count:
        matcher_concept.segment(fresh(stored))
    med = {name: statistics.median(values) for name, values in times.items()}
    return MatcherBenchResult(
        model=backend.name,
        dino=backbone.name,
        random_weights=random_weights,
        image_hw=(int(tgt_image.shape[0]), int(tgt_image.shape[1])),
        precision=backend.precision,
        device=str(backend.device),
        torch_version=str(torch.__version__),
        threads=torch.get_num_threads(),
        runs=int(runs),
        encoder_s=med["encoder_s"],
        dino_encoder_s=med["dino_encoder_s"],
        persam_extra_s=med["persam_extra_s"],
        matcher_extra_s=med["matcher_extra_s"],
        persam_decoder_passes=persam_count.rows,
        matcher_decoder_prompts=matcher_count.rows,
        matcher_decoder_calls=calls,
        transport_problems=problems,
        **{name: med[name] for name in STEPS},
    )


def format_matcher_bench(result: MatcherBenchResult) -> str:
    """The result as a small table: milliseconds, decoder passes, the ratio to PerSAM."""
    weights = "random weights" if result.random_weights else "trained weights"
    h, w = result.image_hw
    lines = [
        f"persam bench --prior matcher: {result.model} + {result.dino} ({weights}), {w}x{h} photo, "
        f"{result.device}, torch {result.torch_version}, {result.threads} threads, median of {result.runs} "
        "interleaved rounds",
        f"{'stage':<44} {'ms':>10}  {'decoder passes':>14}",
        f"{'SAM image encoder':<44} {result.encoder_s * 1000:10.1f}",
        f"{'DINOv2 encoder (518 px)':<44} {result.dino_encoder_s * 1000:10.1f}",
        f"{'PerSAM beyond the encoders':<44} {result.persam_extra_s * 1000:10.1f}  {result.persam_decoder_passes:14d}",
        f"{'matcher beyond the encoders':<44} {result.matcher_extra_s * 1000:10.1f}  "
        f"{result.matcher_decoder_prompts:14d}",
        f"{'  patch matching, prompt sampling':<44} {result.match_s * 1000:10.1f}",
        f"{'  SAM masks of the sampled prompts':<44} {result.decode_s * 1000:10.1f}  "
        f"{'(' + str(result.matcher_decoder_calls) + ' calls)':>14}",
        f"{'  transport scoring':<44} {result.transport_s * 1000:10.1f}  "
        f"{'(' + str(result.transport_problems) + ' problems)':>14}",
        f"{'  merge':<44} {result.merge_s * 1000:10.1f}",
        f"matcher beyond the encoders: {result.matcher_over_persam:.1f} x PerSAM's (target <= {TARGET_RATIO:g} x)",
    ]
    return "\n".join(lines)
