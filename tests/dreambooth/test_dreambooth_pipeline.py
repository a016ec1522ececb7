"""persam dreambooth prepare + train, end to end on tiny random models (CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from extras import require
from persam.cli.main import main
from persam.jobs.dreambooth.prepare import check_mask, prepare_dataset, read_metadata

require("diffusers")
require("transformers")
require("accelerate")


def _photo(seed: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 120 + 60).astype(np.uint8)
    image = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w].copy()
    cy, cx = h * (0.45 + 0.05 * seed), w * (0.5 - 0.04 * seed)
    mask = ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 <= 1
    image[mask] = (220, 30, 40)
    return image, mask


def _tiny_sd(folder: Path) -> Path:
    """A randomly initialised, tiny Stable Diffusion pipeline folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=1000,
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = folder / "tok_src"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = folder / "sd"
    pipe.save_pretrained(out)
    return out


class _FakeResult:
    def __init__(self, mask: np.ndarray, present: bool = True):
        self.mask, self.present, self.score = mask, present, 0.5


class _FakeConcept:
    """Returns a mask chosen by the photo's mean colour (so each photo gets a known case)."""

    def __init__(self, cases):
        self.cases = cases

    def segment(self, image, detect_absent=False):
        assert detect_absent
        return self.cases[int(image[0, 0, 0])]


def test_prepare_rejects_absent_and_implausible_masks(tmp_path):
    h, w = 40, 50
    good = np.zeros((h, w), bool)
    good[10:30, 10:30] = True
    tiny = np.zeros((h, w), bool)
    tiny[0, 0] = True
    cases = {
        0: _FakeResult(good),
        1: _FakeResult(np.zeros((h, w), bool), present=False),
        2: _FakeResult(tiny),
        3: _FakeResult(np.ones((h, w), bool)),
    }
    photos = tmp_path / "photos"
    photos.mkdir()
    for v, name in enumerate(["good", "absent", "tiny", "full"]):
        Image.fromarray(np.full((h, w, 3), v, np.uint8)).save(photos / f"{name}.png")
    data = tmp_path / "data"
    report = prepare_dataset(_FakeConcept(cases), [photos], data, prompt="a photo of sks toy")
    rows = read_metadata(data)
    assert rows == [{"file_name": "images/good.png", "mask_file_name": "masks/good.png", "text": "a photo of sks toy"}]
    rejected = {r["name"]: r for r in json.loads((data / "rejected.json").read_text())}
    assert set(rejected) == {"absent", "tiny", "full"}
    assert rejected["absent"]["reason"].startswith("absent")
    assert "< 1%" in rejected["tiny"]["reason"] and "> 95%" in rejected["full"]["reason"]
    assert not any(r["included"] for r in rejected.values()) and len(report.kept) == 1
    assert np.array_equal(np.asarray(Image.open(data / "masks/good.png")) > 0, good)
    assert (data / "overlays/good.jpg").is_file()

    forced = prepare_dataset(_FakeConcept(cases), [photos], tmp_path / "forced", prompt="p", force=True)
    assert len(forced.kept) == 4 and all(r["included"] for r in forced.rejected)


def test_check_mask_bounds():
    m = np.zeros((10, 10), bool)
    m[:5] = True
    assert check_mask(True, m) is None
    assert check_mask(False, m).startswith("absent")


def test_missing_extras_give_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    code = main(
        [
            "dreambooth",
            "train",
            str(tmp_path),
            "--base-model",
            str(tmp_path),
            "--instance-prompt",
            "x",
            "-o",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and 'pip install "persam[dreambooth]"' in err[0]


def test_prepare_train_resume_end_to_end(tmp_path, capsys, monkeypatch):
    from diffusers import StableDiffusionPipeline

    import persam.cli.dreambooth

    shown = []  # (desc, total, items seen) of each progress display the commands open

    def recording_progress(items, total, desc, unit="img"):
        shown.append([desc, total, 0])
        for item in items:
            shown[-1][2] += 1
            yield item

    monkeypatch.setattr(persam.cli.dreambooth, "progress", recording_progress)

    photos = tmp_path / "photos"
    photos.mkdir()
    ref, ref_mask = _photo(0)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(ref_mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    for i in range(3):
        Image.fromarray(_photo(i + 1)[0]).save(photos / f"p{i}.png")
    data = tmp_path / "data"
    torch.manual_seed(0)
    code = main(
        [
            "dreambooth",
            "prepare",
            str(photos),
            "--ref",
            str(tmp_path / "ref.png"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "-o",
            str(data),
            "--prompt",
            "a photo of sks toy",
            "--force",
            "--model",
            "sam_tiny",
            "--random-weights",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert shown == [["dreambooth prepare", 3, 3]]
    assert f"persam dreambooth prepare: 3 photos written to {data}" in capsys.readouterr().out
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == ["images/p0.png", "images/p1.png", "images/p2.png"]
    assert all(r["text"] == "a photo of sks toy" and (data / r["mask_file_name"]).is_file() for r in rows)
    assert isinstance(json.loads((data / "rejected.json").read_text()), list)
    # random SAM weights: masks may be anything; make one a real subject mask so the loss sees a foreground
    Image.fromarray(_photo(1)[1].astype(np.uint8) * 255).save(data / "masks/p0.png")

    sd = _tiny_sd(tmp_path)
    out = tmp_path / "out"
    base = [
        "dreambooth",
        "train",
        str(data),
        "--base-model",
        str(sd),
        "--instance-prompt",
        "a photo of sks toy",
        "-o",
        str(out),
        "--resolution",
        "32",
        "--lr",
        "1e-3",
        "--seed",
        "1",
    ]
    capsys.readouterr()
    assert main(base + ["--steps", "2"]) == 0
    state = json.loads((out / "train_state.json").read_text())
    assert state["start_step"] == 0 and state["step"] == 2
    assert (out / "checkpoints/step-2/persam_step.json").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(out / "pipeline")
    base_unet = StableDiffusionPipeline.from_pretrained(sd).unet
    changed = any(
        not torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), base_unet.state_dict().values())
    )
    assert changed, "training did not change the UNet"

    assert main(base + ["--steps", "3"]) == 0
    assert shown[1:] == [["dreambooth train", 2, 2], ["dreambooth train (from step 2)", 1, 1]]
    err = capsys.readouterr().err
    assert "resuming from" in err and "step 2 of 3" in err
    state = json.loads((out / "train_state.json").read_text())
    assert state["start_step"] == 2 and state["step"] == 3
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]  # keep 1 checkpoint
    resumed = StableDiffusionPipeline.from_pretrained(out / "pipeline").unet.state_dict()

    # an uninterrupted 3-step run gives the same UNet as 2 steps + resume
    straight = tmp_path / "straight"
    assert main(base + ["-o", str(straight), "--steps", "3"]) == 0  # the last -o wins
    once = StableDiffusionPipeline.from_pretrained(straight / "pipeline").unet.state_dict()
    assert all(torch.allclose(once[k], resumed[k], atol=1e-6) for k in once)


def test_train_with_prior_preservation_and_v_prediction(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    image, mask = _photo(0, 64, 64)
    Image.fromarray(image).save(data / "images/a.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(data / "masks/a.png")
    (data / "metadata.jsonl").write_text(
        json.dumps({"file_name": "images/a.png", "mask_file_name": "masks/a.png", "text": "t"}) + "\n"
    )
    classes = tmp_path / "class"
    classes.mkdir()
    for i in range(2):
        Image.fromarray(_photo(i + 2, 48, 64)[0]).save(classes / f"c{i}.png")
    sd = _tiny_sd(tmp_path)
    cfg = sd / "scheduler/scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "prediction_type": "v_prediction"}))
    out = tmp_path / "out"
    assert (
        main(
            [
                "dreambooth",
                "train",
                str(data),
                "--base-model",
                str(sd),
                "--instance-prompt",
                "a photo of sks toy",
                "-o",
                str(out),
                "--class-data",
                str(classes),
                "--class-prompt",
                "a photo of a toy",
                "--prior-weight",
                "0.5",
                "--steps",
                "1",
                "--resolution",
                "32",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    state = json.loads((out / "train_state.json").read_text())
    assert state["prediction_type"] == "v_prediction" and np.isfinite(state["last_loss"])


def test_train_user_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "dreambooth",
                "train",
                str(tmp_path),
                "--base-model",
                str(tmp_path),
                "--instance-prompt",
                "x",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "metadata.jsonl" in capsys.readouterr().err
    assert (
        main(
            [
                "dreambooth",
                "train",
                str(tmp_path),
                "--base-model",
                str(tmp_path),
                "--instance-prompt",
                "x",
                "-o",
                str(tmp_path / "o"),
                "--class-data",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "--class-prompt" in capsys.readouterr().err
