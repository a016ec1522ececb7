"""With a cached runtime conversion of its encoder, a SAM 1 family backend is built without its PyTorch
image encoder (nor that encoder's code: MobileSAM's TinyViT and timm, torchvision) and segments exactly
as the whole model through the same runtime does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import persam
from conftest import RUNTIME_PARAMS, synthetic_photo
from extras import needs
from persam.backends.builders import build_decoder, build_parts, write_random_checkpoint
from persam.backends.checkpoints import file_sha256
from persam.backends.decoder_only import RuntimeOnlyEncoder
from persam.cli.main import main as cli_main

SRC = str(Path(persam.__file__).resolve().parents[1])


@pytest.mark.parametrize("name", ["sam_tiny", "vit_t", "vit_b"])
def test_the_decoder_alone_is_the_whole_models_decoder(name) -> None:
    _, prompt_encoder, mask_decoder, _ = build_parts(name)
    alone = build_decoder(name)
    for whole, part in zip((prompt_encoder, mask_decoder), alone):
        assert type(part) is type(whole)  # the package's own classes
        expected = {k: tuple(v.shape) for k, v in whole.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in part.state_dict().items()} == expected


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
def test_a_cached_conversion_gives_a_decoder_only_backend_with_the_same_masks(runtime, tmp_path, cache) -> None:
    ckpt = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=6)
    ref, ref_mask = synthetic_photo(200, 260, seed=0)
    target, _ = synthetic_photo(200, 260, seed=1, center=(0.55, 0.45))
    whole = persam.load("sam_tiny", ckpt, device="cpu", runtime=runtime)  # converts: the whole model is built
    assert not isinstance(whole.backend.image_encoder, RuntimeOnlyEncoder)
    alone = persam.load("sam_tiny", ckpt, device="cpu", runtime=runtime)  # the conversion is cached now
    assert isinstance(alone.backend.image_encoder, RuntimeOnlyEncoder)
    assert alone.backend.checkpoint_sha256 == whole.backend.checkpoint_sha256
    assert alone.backend.runtime == runtime and not alone.backend.runtime_encoder.converted
    for name, value in whole.backend.mask_decoder.state_dict().items():
        assert torch.equal(alone.backend.mask_decoder.state_dict()[name], value), name
    results = [model.personalize(ref, ref_mask).segment(target) for model in (whole, alone)]
    assert np.array_equal(results[0].mask, results[1].mask) and results[0].mask.any()
    assert results[0].score == results[1].score


def test_decoder_keys_that_do_not_fit_are_one_line(tmp_path) -> None:
    from persam.backends.decoder_only import load_decoder
    from persam.backends.models import MODELS
    from persam.errors import CheckpointError

    ckpt = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=7)
    state = torch.load(ckpt, weights_only=True)
    del state["mask_decoder.iou_token.weight"]
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"broken\.pt: .*1 missing, e\.g\. 'mask_decoder\.iou_token\.weight'"):
        load_decoder(MODELS["sam_tiny"], broken, torch.device("cpu"))


PROBE = """
import sys
from persam.cli.main import main
code = main({argv!r})
heavy = ("torchvision", "timm", "huggingface_hub", "segment_anything.modeling.image_encoder",
         "mobile_sam.modeling.tiny_vit_sam", "mobile_sam.predictor", "segment_anything.predictor")
print("EXIT", code)
print("IMPORTED", ",".join(m for m in heavy if m in sys.modules))
"""


def cold_segment(argv: list[str], home: Path) -> tuple[int, list[str]]:
    """Run ``persam ARGV`` in a fresh interpreter: (exit status, which heavy modules it imported)."""
    env = {**os.environ, "PYTHONPATH": SRC, "PERSAM_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, env=env, timeout=600
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    code = int(next(line for line in lines if line.startswith("EXIT")).split()[1])
    imported = next(line for line in lines if line.startswith("IMPORTED")).split(" ", 1)[1]
    return code, [m for m in imported.split(",") if m]


def _photos(tmp_path: Path) -> list[str]:
    ref, mask = synthetic_photo(120, 160, seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    Image.fromarray(synthetic_photo(120, 160, seed=51)[0]).save(tmp_path / "photo.png")
    return [
        "--ref",
        str(tmp_path / "ref.png"),
        "--ref-mask",
        str(tmp_path / "ref_mask.png"),
        str(tmp_path / "photo.png"),
    ]


@needs("openvino")
@pytest.mark.parametrize("name", ["sam_tiny", pytest.param("vit_t", marks=pytest.mark.slow)])
def test_a_cold_segment_with_a_cached_encoder_imports_no_encoder_code(name, tmp_path) -> None:
    """The first run converts (whole model); the second imports neither torchvision nor the encoder's code."""
    ckpt = write_random_checkpoint(name, tmp_path / f"{name}.pt", seed=0)
    inputs = _photos(tmp_path)
    runs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        argv = ["segment", *inputs, "-o", str(out), "--model", name, "--checkpoint", str(ckpt)]
        runs.append(cold_segment([*argv, "--runtime", "openvino", "--device", "cpu"], tmp_path / "home"))
        assert runs[-1][0] == 0
    assert runs[1][1] == [], f"a cold run with a cached encoder imported {runs[1][1]}"
    masks = [np.asarray(Image.open(tmp_path / f"out{i}" / "photo.png")) for i in range(2)]
    assert np.array_equal(masks[0], masks[1])
    digests = [json.loads((tmp_path / f"out{i}" / "manifest.json").read_text()) for i in range(2)]
    assert file_sha256(ckpt) in json.dumps(digests[1])


def test_deferred_package_init_still_runs_when_used(tmp_path) -> None:
    """After the decoder alone was built, the package itself still imports whole, with the same classes."""
    code = (
        "import sys\n"
        "from persam.backends.builders import build_decoder\n"
        "build_decoder('sam_tiny')\n"
        "assert 'torchvision' not in sys.modules and 'segment_anything.predictor' not in sys.modules\n"
        "from segment_anything import SamPredictor, sam_model_registry\n"
        "import segment_anything.modeling as m, segment_anything.modeling.mask_decoder as d\n"
        "assert m.MaskDecoder is d.MaskDecoder and 'vit_b' in sam_model_registry and SamPredictor\n"
        "print('OK')\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.strip() == "OK", done.stderr[-3000:]


@pytest.mark.parametrize("name", ["sam_tiny", pytest.param("vit_t", marks=pytest.mark.slow)])
def test_an_indexed_segment_with_a_saved_concept_builds_no_image_encoder(name, tmp_path) -> None:
    """``segment --index --concept`` encodes no photo: the image encoder is neither built nor its code
    imported (MobileSAM's TinyViT, timm, torchvision), and the masks are those of a run with the whole model."""
    ckpt = write_random_checkpoint(name, tmp_path / f"{name}.pt", seed=0)
    inputs = _photos(tmp_path)
    model = ["--model", name, "--checkpoint", str(ckpt), "--device", "cpu"]
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in (51, 52):
        Image.fromarray(synthetic_photo(120, 160, seed=seed)[0]).save(photos / f"p{seed}.png")
    concept, index = tmp_path / "c.persam", tmp_path / "album.idx"
    assert cli_main(["personalize", *inputs[:4], "-o", str(concept), *model]) == 0
    assert cli_main(["index", str(photos), "-o", str(index), "--dtype", "float32", *model]) == 0
    whole = tmp_path / "whole"  # the concept applied to the photos directly: the whole model, encoding them
    assert cli_main(["segment", "--concept", str(concept), str(photos), "-o", str(whole), *model]) == 0
    out = tmp_path / "indexed"
    argv = ["segment", "--concept", str(concept), "--index", str(index), "-o", str(out), *model]
    code, imported = cold_segment(argv, tmp_path / "home")
    assert code == 0
    assert imported == [], f"an indexed segment imported {imported}"
    for photo in sorted(photos.iterdir()):
        direct = np.asarray(Image.open(whole / photo.name))
        indexed = np.asarray(Image.open(out / photo.name))
        inter, union = int(((direct > 0) & (indexed > 0)).sum()), int(((direct > 0) | (indexed > 0)).sum())
        assert union > 0 and inter / union >= 0.999, (photo.name, inter, union)  # encoder threads may differ


def test_a_backend_built_without_its_encoder_refuses_to_encode(tmp_path) -> None:
    ckpt = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=3)
    model = persam.load("sam_tiny", ckpt, device="cpu", image_encoder=False)
    assert isinstance(model.backend.image_encoder, RuntimeOnlyEncoder)
    with pytest.raises(RuntimeError, match="built without its image encoder"):
        model.backend.encode(synthetic_photo(120, 160, seed=1)[0])
    whole = persam.load("sam_tiny", ckpt, device="cpu")
    for name, value in whole.backend.mask_decoder.state_dict().items():
        assert torch.equal(model.backend.mask_decoder.state_dict()[name], value), name


@needs("openvino")
def test_the_decoder_loads_before_the_cached_encoder_is_waited_for(tmp_path, cache, monkeypatch) -> None:
    # a warm start may still be encoding when the model loads: the decoder is built meanwhile
    from persam.backends import decoder_only, runtime

    ckpt = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=6)
    persam.load("sam_tiny", ckpt, device="cpu", runtime="openvino")  # converts
    calls = []
    real_decoder, real_encoder = decoder_only.load_decoder, runtime.cached_runtime_encoder
    monkeypatch.setattr(decoder_only, "load_decoder", lambda *a: calls.append("decoder") or real_decoder(*a))
    monkeypatch.setattr(runtime, "cached_runtime_encoder", lambda **k: calls.append("encoder") or real_encoder(**k))
    model = persam.load("sam_tiny", ckpt, device="cpu", runtime="openvino")
    assert calls == ["decoder", "encoder"]
    assert isinstance(model.backend.image_encoder, RuntimeOnlyEncoder)


@needs("openvino")
def test_a_damaged_conversion_still_gives_the_whole_model(tmp_path, cache) -> None:
    from persam.backends.encoder_cache import encoders_dir

    ckpt = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt", seed=6)
    persam.load("sam_tiny", ckpt, device="cpu", runtime="openvino")  # converts
    (folder,) = list(encoders_dir().iterdir())
    weights = folder / "encoder.bin"
    weights.write_bytes(weights.read_bytes()[:-8] + b"damaged!")
    model = persam.load("sam_tiny", ckpt, device="cpu", runtime="openvino")  # found, fails its check
    assert not isinstance(model.backend.image_encoder, RuntimeOnlyEncoder)
