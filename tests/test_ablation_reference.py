"""The command line's PerSAM-F ablations, checked against the oracle of the reference.

``persam segment --finetune --without refinement`` must write PerSAM-F's
weighted three-scale mask (its mask before refinement), which the oracle
computes independently from the reference's fit; components PerSAM-F does not
have (guided attention, semantic prompt, negative point) are refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from segment_anything.modeling import Sam

import persam
from persam.cli.main import main
from reference_oracle import OracleImage, persam_f_fit, persam_f_segment
from test_reference_agreement import SCENES, palette_mask, synthetic_photo

MIN_IOU = 0.985


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from persam.backends.builders import write_random_checkpoint

    return write_random_checkpoint("sam_tiny", tmp_path_factory.mktemp("ckpt") / "tiny.pth", seed=3)


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_finetune_without_refinement_writes_the_reference_weighted_mask(tmp_path, checkpoint, scene):
    _, ref_args, tgt_args = SCENES[scene]
    ref, blob = synthetic_photo(*ref_args)
    target, _ = synthetic_photo(*tgt_args)
    annotation = palette_mask(blob)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    annotation.save(tmp_path / "ref_mask.png")
    Image.fromarray(target).save(tmp_path / "target.png")
    status = main(
        [
            "segment",
            "--ref",
            str(tmp_path / "ref.png"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "--finetune",
            "--without",
            "refinement",
            str(tmp_path / "target.png"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    written = np.array(Image.open(tmp_path / "out" / "target.png")) > 0

    b = persam.load("sam_tiny", checkpoint, device="cpu").backend
    sam = Sam(image_encoder=b.image_encoder, prompt_encoder=b.prompt_encoder, mask_decoder=b.mask_decoder)
    mask_rgb = np.array(annotation.convert("RGB"))
    fitted = persam_f_fit(OracleImage(sam, ref, mask_rgb), mask_rgb, rerun_decoder=False)
    oracle = persam_f_segment(OracleImage(sam, target), fitted)
    value = iou(written, oracle.first_mask)
    print(f"{scene}: weighted-mask IoU {value:.4f}, final-mask IoU {iou(written, oracle.mask):.4f}")
    assert value >= MIN_IOU, value


@pytest.mark.parametrize("component", ["guided-attention", "semantic-prompt", "negative-point"])
def test_finetune_refuses_components_it_does_not_have(tmp_path, checkpoint, capsys, component):
    ref, blob = synthetic_photo(0, (150, 200), (70, 90), (200, 60, 40))
    Image.fromarray(ref).save(tmp_path / "ref.png")
    palette_mask(blob).save(tmp_path / "ref_mask.png")
    status = main(
        [
            "segment",
            "--ref",
            str(tmp_path / "ref.png"),
            "--ref-mask",
            str(tmp_path / "ref_mask.png"),
            "--finetune",
            "--without",
            component,
            str(tmp_path / "ref.png"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "sam_tiny",
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "PerSAM-F does not use" in err and component in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "ref.png").exists()
