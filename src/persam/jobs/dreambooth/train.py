"""A DreamBooth loop on ``diffusers`` + ``accelerate`` with the foreground-only loss.

Only the UNet is trained; the VAE and the text encoder are frozen. Each step
draws its photos, noise and timesteps from a generator seeded with
``(seed, step)``, so a run resumed from a checkpoint continues exactly as an
uninterrupted run would (the model, optimiser and RNG states come from
``accelerate``'s ``save_state``).

Output folder::

    OUT/checkpoints/step-N/   accelerate training state (+ persam_step.json once complete)
    OUT/pipeline/             the fine-tuned StableDiffusionPipeline (diffusers format)
    OUT/log.jsonl             {"step", "loss"} per step
    OUT/train_state.json      {"start_step", "step", "steps", ...} of the last run
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from persam.errors import InputError, MissingInputError, OptionsError
from persam.jobs.dreambooth.loss import dreambooth_loss
from persam.jobs.dreambooth.prepare import read_metadata

INSTALL_HINT = 'pip install "persam[dreambooth]"'


class MissingExtrasError(ImportError):
    """diffusers / transformers / accelerate are not installed."""


def require_extras() -> None:
    """Raise MissingExtrasError (one line, with the pip command) if an extra is missing."""
    missing = []
    for name in ("diffusers", "transformers", "accelerate"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtrasError(f"DreamBooth training needs {', '.join(missing)}: {INSTALL_HINT}")


@dataclass
class TrainConfig:
    """Options of ``train`` (the CLI flags of ``persam dreambooth train``)."""

    data: str
    model: str
    instance_prompt: str
    output: str
    class_data: str | None = None
    class_prompt: str | None = None
    prior_weight: float = 1.0
    steps: int = 400
    lr: float = 5e-6
    mixed_precision: str = "no"
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    dilate: int = 1
    checkpoint_every: int = 200
    keep_checkpoints: int = 1
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0

    def check(self) -> None:
        if self.steps < 1:
            raise OptionsError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise OptionsError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            raise OptionsError(f"--lr must be positive, got {self.lr}")
        if self.checkpoint_every < 1:
            raise OptionsError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            raise OptionsError(f"--keep-checkpoints must be at least 1, got {self.keep_checkpoints}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise OptionsError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision}")
        if (self.class_data is None) != (self.class_prompt is None):
            raise OptionsError("prior preservation needs both --class-data DIR and --class-prompt TEXT")


@dataclass
class TrainResult:
    start_step: int
    step: int
    pipeline: Path
    last_loss: float | None


def _square(img, resolution: int, resample):
    """Resize the shorter side to ``resolution`` and centre-crop a square."""
    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((nw, nh), resample)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def load_pixels(path: Path, resolution: int) -> torch.Tensor:
    """(3, R, R) float in [-1, 1]."""
    from PIL import Image

    from persam.io import load_image

    img = _square(Image.fromarray(load_image(path)), resolution, Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def load_mask_tensor(path: Path, resolution: int) -> torch.Tensor:
    """(1, R, R) float {0, 1}, cropped like the photo."""
    from PIL import Image

    from persam.io import read_binary_mask

    img = _square(Image.fromarray(read_binary_mask(path).astype(np.uint8) * 255), resolution, Image.NEAREST)
    return torch.from_numpy(np.asarray(img) > 127).float()[None]


def checkpoints(output: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, folder), oldest first."""
    found = []
    root = output / "checkpoints"
    if root.is_dir():
        for d in root.iterdir():
            marker = d / "persam_step.json"
            if d.name.startswith("step-") and marker.is_file():
                try:
                    found.append((int(json.loads(marker.read_text())["step"]), d))
                except (ValueError, KeyError):
                    continue
    return sorted(found)


def _log(message: str) -> None:
    print(f"persam: {message}", file=sys.stderr, flush=True)


def train(config: TrainConfig, progress=None) -> TrainResult:
    """Fine-tune the UNet of a Stable Diffusion pipeline on the prepared data.

    Resumes from the last complete checkpoint in ``OUT/checkpoints`` when
    there is one (steps already done are skipped); with ``steps`` already
    reached it only (re)writes ``OUT/pipeline``.

    ``progress``: ``progress(items, total, desc, unit=...)`` wrapping the step
    loop (as ``persam.jobs.davis.run_davis``'s); None = no progress display.
    """
    config.check()
    require_extras()
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from persam.io import atomic_write_text, find_images

    data = Path(config.data)
    rows = read_metadata(data)
    instances = [(data / r["file_name"], data / r["mask_file_name"]) for r in rows]
    class_images = [p for p, _ in find_images([config.class_data])] if config.class_data else []
    if config.class_data and not class_images:
        raise InputError(f"{config.class_data}: no class images; generate some with the base model first")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)

    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    source = config.model
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    except OSError as exc:
        raise MissingInputError(
            f"{source}: not a diffusers Stable Diffusion folder ({str(exc).splitlines()[0]})"
        ) from None
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if config.resolution % (factor * 2 ** (len(unet.config.block_out_channels) - 1)):
        raise OptionsError(
            f"--resolution {config.resolution} must be a multiple of "
            f"{factor * 2 ** (len(unet.config.block_out_channels) - 1)} for this model"
        )
    prediction_type = noise_scheduler.config.prediction_type

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    device = accelerator.device
    vae.requires_grad_(False).to(device, dtype=weight_dtype).eval()
    text_encoder.requires_grad_(False).to(device, dtype=weight_dtype).eval()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=1e-2)
    unet, optimizer = accelerator.prepare(unet, optimizer)

    @torch.no_grad()
    def embed(prompt: str) -> torch.Tensor:
        ids = tokenizer(
            prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        return text_encoder(ids.to(device))[0]

    instance_emb = embed(config.instance_prompt)
    class_emb = embed(config.class_prompt) if class_images else None
    scaling = vae.config.scaling_factor

    start_step = 0
    done = checkpoints(output)
    if done:
        start_step, ckpt = done[-1]
        accelerator.load_state(str(ckpt))
        _log(f"resuming from {ckpt} (step {start_step} of {config.steps})")

    def save_checkpoint(step: int) -> None:
        folder = output / "checkpoints" / f"step-{step}"
        if folder.exists():
            shutil.rmtree(folder)
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            atomic_write_text(folder / "persam_step.json", json.dumps({"step": step, "steps": config.steps}) + "\n")
            for _, old in checkpoints(output)[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)

    loss_value = None
    log = open(output / "log.jsonl", "a", encoding="utf-8") if accelerator.is_main_process else None
    try:
        steps = range(start_step, config.steps)
        if progress is not None:
            steps = progress(
                steps,
                len(steps),
                f"dreambooth train (from step {start_step})" if start_step else "dreambooth train",
                unit="step",
            )
        for step in steps:
            g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            picks = torch.randint(len(instances), (config.batch_size,), generator=g).tolist()
            pixels = torch.stack([load_pixels(instances[i][0], config.resolution) for i in picks])
            masks = torch.stack([load_mask_tensor(instances[i][1], config.resolution) for i in picks])
            emb = instance_emb.expand(config.batch_size, -1, -1)
            if class_images:
                cpicks = torch.randint(len(class_images), (config.batch_size,), generator=g).tolist()
                pixels = torch.cat(
                    [pixels, torch.stack([load_pixels(class_images[i], config.resolution) for i in cpicks])]
                )
                emb = torch.cat([emb, class_emb.expand(config.batch_size, -1, -1)])
            with torch.no_grad():
                dist = vae.encode(pixels.to(device, dtype=weight_dtype)).latent_dist
                eps = torch.randn(dist.mean.shape, generator=g).to(device, dtype=dist.mean.dtype)
                latents = (dist.mean + dist.std * eps).float() * scaling
            noise = torch.randn(latents.shape, generator=g).to(device)
            timesteps = torch.randint(noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g).to(
                device
            )
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            if prediction_type == "epsilon":
                target = noise
            elif prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            elif prediction_type == "sample":
                target = latents
            else:
                raise InputError(f"unsupported scheduler prediction_type {prediction_type!r}")
            with accelerator.autocast():
                pred = unet(noisy, timesteps, emb.to(device)).sample
            b = config.batch_size
            if class_images:
                loss = dreambooth_loss(
                    pred[:b],
                    target[:b],
                    masks.to(device),
                    pred[b:],
                    target[b:],
                    config.prior_weight,
                    dilate=config.dilate,
                )
            else:
                loss = dreambooth_loss(pred, target, masks.to(device), dilate=config.dilate)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            if log is not None:
                log.write(json.dumps({"step": step + 1, "loss": round(loss_value, 6)}) + "\n")
                log.flush()
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                save_checkpoint(step + 1)
    finally:
        if log is not None:
            log.close()

    accelerator.wait_for_everyone()
    final = max(start_step, config.steps)
    pipeline_dir = output / "pipeline"
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(unet).to(torch.float32)
        pipe = StableDiffusionPipeline.from_pretrained(source, unet=trained)  # other parts as stored in the base folder
        tmp = output / ".pipeline.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        pipe.save_pretrained(tmp, safe_serialization=True)
        if pipeline_dir.exists():
            shutil.rmtree(pipeline_dir)
        os.replace(tmp, pipeline_dir)
        state = {
            "start_step": start_step,
            "step": final,
            "steps": config.steps,
            "prediction_type": prediction_type,
            "last_loss": loss_value,
            "config": asdict(config),
        }
        atomic_write_text(output / "train_state.json", json.dumps(state, indent=2) + "\n")
        _log(f"trained steps {start_step}..{final}; pipeline written to {pipeline_dir}")
    return TrainResult(start_step=start_step, step=final, pipeline=pipeline_dir, last_loss=loss_value)
