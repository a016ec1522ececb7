"""Speed measurements of the method's stages on synthetic photos (no printing here).

``run_benchmark`` loads a backend, builds two deterministic synthetic photos
(a textured background with a coloured ellipse: the object) and times, as the
median over ``runs`` runs after one warm-up run:

* ``encoder_s``: ``backend.encode(image)``, the image encoder on the target photo;
* ``decoder_pass_s``: one multi-mask pass of SAM's prompt encoder and mask
  decoder (one positive point) on the encoded target, as persam runs it
  (re-associated, ``persam.method.factored``);
* ``official_decoder_pass_s``: the same pass through the official modules in
  their own order (``decode(..., exact=True)``), the reference's cost;
* ``persam_extra_s``: ``concept.segment(encoded)`` of a training-free PerSAM
  concept on the already encoded target, including the full-resolution mask;
* ``persam_f_extra_s``: the same for a PerSAM-F concept;
* ``fit_s``: ``model.personalize(encoded_reference, mask, finetune=True)``,
  the PerSAM-F fit on the already encoded reference;
* ``decode_only_s``: ``concept.segment(pixels)`` of the training-free concept on
  target pixels whose embedding is in the session cache (the session API's
  path for a photo seen before: pixel hashing and cache look-up included);
* ``video_extra_s``: one frame of the video protocol with three objects on an
  encoded frame (``persam.jobs.video_bench.video_frame_runner``);
* ``peak_rss_mb``: the peak resident memory of the process;
* ``encoder_gflop`` and ``video_gflop``: the arithmetic of the encoder and of
  the video frame (matrix products and convolutions, counted once by
  ``torch.utils.flop_counter``), whose ratio is what the video frame would
  cost against the encoder if both ran at the same arithmetic speed.

Every timed call on an encoded image starts without its per-image products
(``EncodedImage.forget_derived``: the decoder's first-block projections,
the normalised features), so their cost is counted as for a new photo.

The stages are run in rounds (one call of each stage per round, round 0 a
warm-up), so a slow spell of a shared machine slows every stage alike and
the ratios between stages stay meaningful.

Times are wall-clock seconds (``persam.jobs.timing.seconds``: on CUDA and MPS
the device is synchronised around each run).
"""

from __future__ import annotations

import resource
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from persam.errors import OptionsError
from persam.jobs.synthetic import synthetic_photo
from persam.jobs.timing import seconds

#: Keys of ``BenchResult.to_dict()`` that are durations in seconds.
TIMING_KEYS = (
    "encoder_s",
    "decoder_pass_s",
    "official_decoder_pass_s",
    "persam_extra_s",
    "persam_f_extra_s",
    "fit_s",
    "decode_only_s",
    "video_extra_s",
    "parts_extra_s",
)
#: Ratios of ``BenchResult.to_dict()``: a stage's time over one decoder pass (video: over the encoder).
RATIO_KEYS = (
    "persam_extra_over_decoder",
    "persam_f_extra_over_decoder",
    "decode_only_over_decoder",
    "video_extra_over_encoder",
    "video_gflop_over_encoder",
    "parts_over_persam",
)


@dataclass(frozen=True)
class BenchResult:
    """Median timings (seconds) and the setting they were measured in.

    Attributes:
        model: backend name.
        random_weights: whether the backend ran without trained weights.
        image_size: long side N of the synthetic photos (N x round(0.75 N)).
        image_hw: (H, W) of the photos.
        precision: "fp32" or "bf16".
        device: torch device the backend ran on.
        torch_version: ``torch.__version__``.
        threads: ``torch.get_num_threads()`` during the runs.
        runs: timed runs per stage (after one warm-up run).
        encoder_s: image encoder, one photo.
        decoder_pass_s: one multi-mask prompt-encoder + mask-decoder pass.
        official_decoder_pass_s: the same pass through the official modules (the same
            computation as ``decoder_pass_s`` for a family without the re-associated decoder).
        persam_extra_s: PerSAM on an encoded photo, full-resolution mask included.
        persam_f_extra_s: PerSAM-F on an encoded photo, full-resolution mask included.
        fit_s: PerSAM-F's fit on an encoded reference (``personalize(finetune=True)``).
        decode_only_s: PerSAM on photo pixels whose embedding is cached.
        video_extra_s: per video frame beyond the encoder, 3 objects
            (``persam.jobs.video_bench.video_frame_extra_s``).
        encoder_gflop: the encoder's matrix arithmetic (GFLOP, ``torch.utils.flop_counter``:
            matrix products and convolutions) for one photo.
        video_gflop: the same for one video frame beyond the encoder, 3 objects.
        peak_rss_mb: peak resident memory of the process (MiB).
        parts_extra_s: the part-aware prior (parts 1..5) on an encoded photo (``persam.jobs.parts_bench``).
        parts_transport_share: the fraction of its method step spent on optimal transport.
        decoder_fast_path: whether the model's decoder family runs the re-associated
            SAM 1 decoder (False for SAM 2: ``official_decoder_pass_s`` then adds nothing).
    """

    model: str
    random_weights: bool
    image_size: int
    image_hw: tuple[int, int]
    precision: str
    device: str
    torch_version: str
    threads: int
    runs: int
    encoder_s: float
    decoder_pass_s: float
    official_decoder_pass_s: float
    persam_extra_s: float
    persam_f_extra_s: float
    fit_s: float
    decode_only_s: float
    video_extra_s: float
    encoder_gflop: float
    video_gflop: float
    peak_rss_mb: float
    parts_extra_s: float = float("nan")
    parts_transport_share: float = float("nan")
    decoder_fast_path: bool = True

    @property
    def parts_over_persam(self) -> float:
        return self.parts_extra_s / self.persam_extra_s if self.persam_extra_s > 0 else float("inf")

    def _over_decoder(self, seconds: float) -> float:
        return seconds / self.decoder_pass_s if self.decoder_pass_s > 0 else float("inf")

    @property
    def persam_extra_over_decoder(self) -> float:
        return self._over_decoder(self.persam_extra_s)

    @property
    def persam_f_extra_over_decoder(self) -> float:
        return self._over_decoder(self.persam_f_extra_s)

    @property
    def decode_only_over_decoder(self) -> float:
        return self._over_decoder(self.decode_only_s)

    @property
    def video_extra_over_encoder(self) -> float:
        return self.video_extra_s / self.encoder_s if self.encoder_s > 0 else float("inf")

    @property
    def video_gflop_over_encoder(self) -> float:
        """The video frame's arithmetic over the encoder's: its time ratio at equal arithmetic speed."""
        return self.video_gflop / self.encoder_gflop if self.encoder_gflop > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        """All fields and the ratios, JSON-ready."""
        out: dict[str, object] = asdict(self)
        out["image_hw"] = list(self.image_hw)
        out.update({key: getattr(self, key) for key in RATIO_KEYS})
        return out


def gflop(fn: Callable[[], object]) -> float:
    """GFLOP of the matrix products and convolutions ``fn`` runs (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_benchmark(
    model: str = "vit_t",
    checkpoint: str | None = None,
    *,
    device: str | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
    random_weights: bool = False,
    image_size: int = 1024,
    runs: int = 5,
    on_stage: Callable[[str], None] | None = None,
) -> BenchResult:
    """Load a backend and time the method's stages (see the module docstring).

    Args:
        model: backend name ("vit_t", "vit_b", "vit_l", "vit_h", "litemedsam", "sam_tiny").
        checkpoint: local weights file instead of the download.
        device: "cpu", "cuda", "mps" or None for the best available.
        precision: "fp32" or "bf16" (image encoder only).
        random_weights: no weights (speed only; masks are meaningless).
        image_size: long side N of the synthetic photos (N x round(0.75 N)).
        runs: timed runs per stage, after one warm-up run; the median is kept.
        on_stage: called with each stage's name before it is timed (progress).

    Raises:
        ValueError: runs < 1, image_size < 32, unknown model, device or precision.
    """
    if runs < 1:
        raise OptionsError(f"--runs must be at least 1, got {runs}")
    ref_image, ref_mask = synthetic_photo(image_size, seed=0, center=(0.42, 0.52), axes=(0.2, 0.26))
    tgt_image, _ = synthetic_photo(image_size, seed=1, center=(0.6, 0.45), axes=(0.18, 0.24))

    from persam.method.decoder import Prompt, decode, runner_for
    from persam.session.photo import load

    stage = on_stage or (lambda name: None)
    stage("loading the model")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        if random_weights:  # the same random weights every run: the masks, and so the part-aware
            torch.manual_seed(0)  # prior's transport problems, depend on them
        session = load(
            model, checkpoint, device=device, precision=precision, random_weights=random_weights, progress=False
        )
    backend = session.backend

    encoded_ref = session.encode(ref_image)
    encoded_tgt = session.encode(tgt_image)
    ys, xs = np.nonzero(ref_mask)
    point = torch.tensor([[float(xs.mean()), float(ys.mean())]])
    prompt = Prompt(points_xy=point, labels=torch.tensor([1]))
    concept = session.personalize(encoded_ref, ref_mask)
    concept_f = session.personalize(encoded_ref, ref_mask, finetune=True)
    from persam.jobs.video_bench import video_frame_runner

    video_frame = video_frame_runner(session, n_objects=3, size=image_size)

    def fresh(encoded):
        # Per-image products (first decoder block, normalised features) are
        # computed in every timed call, as for a new photo.
        encoded.forget_derived()
        return encoded

    from persam.jobs.parts_bench import PartsStage

    parts_stage = PartsStage(session, encoded_ref, ref_mask, encoded_tgt, fresh)
    stages: dict[str, Callable[[], object]] = {
        "encoder_s": lambda: backend.encode(tgt_image),
        "decoder_pass_s": lambda: decode(backend, fresh(encoded_tgt), prompt, multimask=True),
        "official_decoder_pass_s": lambda: decode(backend, fresh(encoded_tgt), prompt, multimask=True, exact=True),
        "fit_s": lambda: session.personalize(fresh(encoded_ref), ref_mask, finetune=True),
        "persam_extra_s": lambda: concept.segment(fresh(encoded_tgt)),
        "persam_f_extra_s": lambda: concept_f.segment(fresh(encoded_tgt)),
        "decode_only_s": lambda: (fresh(encoded_tgt), concept.segment(tgt_image)),
        "video_extra_s": video_frame,
        "parts_extra_s": parts_stage,
    }
    cached = ("decode_only_s",)
    times: dict[str, list[float]] = {name: [] for name in stages}
    for round_ in range(runs + 1):  # round 0 warms up
        stage("warm-up" if round_ == 0 else f"round {round_}/{runs}")
        for name, fn in stages.items():
            calls = backend.encoder_calls
            elapsed = seconds(fn, backend.device)
            if name in cached and backend.encoder_calls != calls:
                raise RuntimeError("the image encoder ran during a decoder-only measurement; the timings are not valid")
            if round_:
                times[name].append(elapsed)
        if round_:
            parts_stage.measure_transport()
    medians = {name: statistics.median(values) for name, values in times.items()}
    stage("counting arithmetic")
    encoder_gflop = gflop(lambda: backend.encode(tgt_image))
    video_gflop = gflop(video_frame)

    return BenchResult(
        model=backend.name,
        random_weights=random_weights,
        image_size=int(image_size),
        image_hw=(int(tgt_image.shape[0]), int(tgt_image.shape[1])),
        precision=backend.precision,
        device=str(backend.device),
        torch_version=str(torch.__version__),
        threads=torch.get_num_threads(),
        runs=int(runs),
        encoder_s=medians["encoder_s"],
        decoder_pass_s=medians["decoder_pass_s"],
        official_decoder_pass_s=medians["official_decoder_pass_s"],
        persam_extra_s=medians["persam_extra_s"],
        persam_f_extra_s=medians["persam_f_extra_s"],
        fit_s=medians["fit_s"],
        decode_only_s=medians["decode_only_s"],
        video_extra_s=medians["video_extra_s"],
        encoder_gflop=encoder_gflop,
        video_gflop=video_gflop,
        peak_rss_mb=peak_rss_mb(),
        parts_extra_s=medians["parts_extra_s"],
        parts_transport_share=parts_stage.transport_share,
        decoder_fast_path=runner_for(backend).fast_path,
    )
