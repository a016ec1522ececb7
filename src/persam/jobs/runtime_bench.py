"""The encoder per inference runtime and precision, against PyTorch fp32, in one run.

``run_runtime_benchmark`` loads one backend per (runtime, precision) from the
same weights (with ``random_weights``: a seeded random checkpoint written to a
temporary file, so every configuration runs the same weights and a converted
encoder is reused across runs), always including PyTorch fp32 as the
reference, and times in interleaved rounds (round 0 a warm-up), keeping the
medians:

* ``encoder_s``: ``backend.encode(photo)``, the image encoder on the target photo;
* ``photo_s``: a new photo end to end: ``backend.encode(photo)`` then
  ``concept.segment(encoded)`` of a training-free PerSAM concept (full-resolution
  mask included);
* ``frame_s``: a video frame of 3 objects end to end: ``backend.encode(frame)``
  then ``VideoSession.predict`` (PerSAM's video protocol: similarity, the three
  decoder stages for every object, the full-resolution merge).

Interleaving (one call of every configuration per round) makes a slow spell
of a shared machine slow every configuration alike, so the ratios to PyTorch
fp32 stay meaningful. ``load_s`` is the first load's conversion (if any) and
loading, not timed in the rounds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from persam.backends.base import EncodedImage
from persam.errors import OptionsError
from persam.jobs.bench import peak_rss_mb, synthetic_photo

#: The reference configuration every other one is compared with.
REFERENCE = ("torch", "fp32")
#: Objects in the synthetic video frame.
VIDEO_OBJECTS = 3


def parse_config(text: str, default_precision: str = "fp32") -> tuple[str, str]:
    """``"openvino"`` or ``"openvino:bf16"`` -> ("openvino", "bf16")."""
    from persam.backends.runtime import RUNTIMES

    runtime, _, precision = text.partition(":")
    precision = precision or default_precision
    if runtime not in RUNTIMES or precision not in ("fp32", "bf16"):
        raise OptionsError(
            f"--runtime {text!r}: use RUNTIME or RUNTIME:PRECISION with RUNTIME one of "
            f"{', '.join(RUNTIMES)} and PRECISION fp32 or bf16, e.g. openvino:bf16"
        )
    return runtime, precision


@dataclass(frozen=True)
class RuntimeRow:
    """Median seconds of one configuration.

    Attributes:
        runtime: "torch", "openvino" or "onnxruntime".
        precision: "fp32" or "bf16".
        encoder_s: image encoder, one photo.
        photo_s: encoder + PerSAM on a new photo.
        frame_s: encoder + the video protocol on a frame of ``VIDEO_OBJECTS`` objects.
        encoder_speedup: PyTorch fp32's ``encoder_s`` over this one.
        photo_speedup: PyTorch fp32's ``photo_s`` over this one.
        frame_speedup: PyTorch fp32's ``frame_s`` over this one.
        max_rel_diff: largest difference of an encoder output (the embedding; SAM 2: also its
            two high-resolution maps) to PyTorch fp32's, over that output's largest value.
        load_s: loading, conversion included when one was needed.
        converted: whether loading converted the encoder.
    """

    runtime: str
    precision: str
    encoder_s: float
    photo_s: float
    frame_s: float
    encoder_speedup: float
    photo_speedup: float
    frame_speedup: float
    max_rel_diff: float
    load_s: float
    converted: bool


@dataclass(frozen=True)
class RuntimeBenchResult:
    """The rows (PyTorch fp32 first) and the setting they were measured in."""

    model: str
    random_weights: bool
    image_hw: tuple[int, int]
    threads: int
    runs: int
    torch_version: str
    rows: tuple[RuntimeRow, ...]
    peak_rss_mb: float

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["image_hw"] = list(self.image_hw)
        out["rows"] = [asdict(row) for row in self.rows]
        return out


def _maps(encoded: EncodedImage) -> list[torch.Tensor]:
    """The encoder's outputs: the embedding, then SAM 2's high-resolution maps."""
    return [encoded.embedding, *(encoded.high_res_features or ())]


def run_runtime_benchmark(
    model: str = "vit_t",
    checkpoint: str | None = None,
    *,
    configs: list[tuple[str, str]],
    random_weights: bool = False,
    image_size: int = 1024,
    runs: int = 5,
    on_stage: Callable[[str], None] | None = None,
) -> RuntimeBenchResult:
    """Time the encoder and a new photo per (runtime, precision) on the CPU (see the module docstring).

    Raises:
        ValueError: runs < 1, an unknown model, runtime or precision.
        persam.backends.runtime.RuntimeUnavailableError: a runtime's package is missing.
    """
    if runs < 1:
        raise OptionsError(f"--runs must be at least 1, got {runs}")
    from persam.jobs.synthetic import synthetic_clip_frame
    from persam.session.photo import load
    from persam.session.video import VideoSession

    stage = on_stage or (lambda name: None)
    wanted = [REFERENCE] + [c for c in dict.fromkeys(configs) if c != REFERENCE]
    ref_image, ref_mask = synthetic_photo(image_size, seed=0, center=(0.42, 0.52), axes=(0.2, 0.26))
    tgt_image, _ = synthetic_photo(image_size, seed=1, center=(0.6, 0.45), axes=(0.18, 0.24))
    with tempfile.TemporaryDirectory(prefix="persam-bench-") as tmp:
        if random_weights:
            from persam.backends.builders import write_random_checkpoint

            checkpoint = str(write_random_checkpoint(model, Path(tmp) / f"{model}_random.pt", seed=0))
        sessions, load_s = {}, {}
        for runtime, precision in wanted:
            stage(f"loading {runtime} {precision}")
            start = time.perf_counter()
            sessions[runtime, precision] = load(
                model, checkpoint, device="cpu", precision=precision, runtime=runtime, progress=False
            )
            load_s[runtime, precision] = time.perf_counter() - start
    concepts = {c: s.personalize(ref_image, ref_mask) for c, s in sessions.items()}
    reference = _maps(sessions[REFERENCE].backend.encode(tgt_image))
    diffs = {
        c: max(
            float((ours - ref).abs().max() / ref.abs().max())
            for ours, ref in zip(_maps(s.backend.encode(tgt_image)), reference)
        )
        for c, s in sessions.items()
    }

    frame0, labels0 = synthetic_clip_frame(image_size, VIDEO_OBJECTS)
    frame1, _ = synthetic_clip_frame(image_size, VIDEO_OBJECTS, shift=image_size // 64)
    videos = {c: VideoSession(s, frame0, labels0) for c, s in sessions.items()}

    def photo(config: tuple[str, str]) -> None:
        concepts[config].segment(sessions[config].backend.encode(tgt_image))

    def frame(config: tuple[str, str]) -> None:
        videos[config].predict(sessions[config].backend.encode(frame1))

    stages = {(c, "encoder_s"): (lambda c=c: sessions[c].backend.encode(tgt_image)) for c in sessions}
    stages.update({(c, "photo_s"): (lambda c=c: photo(c)) for c in sessions})
    stages.update({(c, "frame_s"): (lambda c=c: frame(c)) for c in sessions})
    times: dict[tuple, list[float]] = {key: [] for key in stages}
    for round_ in range(runs + 1):  # round 0 warms up
        stage("warm-up" if round_ == 0 else f"round {round_}/{runs}")
        for key, fn in stages.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(values) for key, values in times.items()}
    base = {name: med[REFERENCE, name] for name in ("encoder_s", "photo_s", "frame_s")}
    rows = tuple(
        RuntimeRow(
            runtime=c[0],
            precision=c[1],
            encoder_s=med[c, "encoder_s"],
            photo_s=med[c, "photo_s"],
            frame_s=med[c, "frame_s"],
            encoder_speedup=base["encoder_s"] / med[c, "encoder_s"],
            photo_speedup=base["photo_s"] / med[c, "photo_s"],
            frame_speedup=base["frame_s"] / med[c, "frame_s"],
            max_rel_diff=diffs[c],
            load_s=load_s[c],
            converted=bool(getattr(sessions[c].backend.runtime_encoder, "converted", False)),
        )
        for c in sessions
    )
    return RuntimeBenchResult(
        model=model,
        random_weights=random_weights,
        image_hw=(int(tgt_image.shape[0]), int(tgt_image.shape[1])),
        threads=torch.get_num_threads(),
        runs=int(runs),
        torch_version=str(torch.__version__),
        rows=rows,
        peak_rss_mb=peak_rss_mb(),
    )


def format_runtime_result(result: RuntimeBenchResult) -> str:
    """The rows as a small table (milliseconds, speed-ups over PyTorch fp32)."""
    h, w = result.image_hw
    weights = "random weights" if result.random_weights else "trained weights"
    lines = [
        f"persam bench --runtime: {result.model} ({weights}), {w}x{h} photos on the CPU, torch {result.torch_version}, "
        f"{result.threads} threads, median of {result.runs} interleaved rounds",
        f"{'runtime':<12} {'precision':<9} {'encoder ms':>10} {'x torch':>7} {'photo ms':>9} {'x torch':>7} "
        f"{'frame ms':>9} {'x torch':>7} {'max rel diff':>12} {'load s':>7}",
    ]
    for r in result.rows:
        lines.append(
            f"{r.runtime:<12} {r.precision:<9} {r.encoder_s * 1000:10.1f} {r.encoder_speedup:7.2f} "
            f"{r.photo_s * 1000:9.1f} {r.photo_speedup:7.2f} {r.frame_s * 1000:9.1f} {r.frame_speedup:7.2f} "
            f"{r.max_rel_diff:12.1e} {r.load_s:7.1f}" + ("  (converted)" if r.converted else "")
        )
    lines.append(
        "x torch: PyTorch fp32's time over this one; photo: a new photo end to end (encoder + PerSAM, "
        f"full-resolution mask); frame: a video frame of {VIDEO_OBJECTS} objects end to end (encoder + "
        "PerSAM's video protocol); max rel diff: encoder outputs vs PyTorch fp32"
    )
    return "\n".join(lines)
