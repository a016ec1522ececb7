"""``persam video --point ID:X,Y / --box ID:X0,Y0,X1,Y1``: objects picked on the first frame by SAM."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from persam.cli.main import main
from persam.io import save_label_map

TINY = ["--model", "sam_tiny", "--device", "cpu"]


@pytest.fixture
def folder(tmp_path, clip):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(frames / f"{i:05d}.png")
    return frames


def test_prompts_give_the_same_run_as_their_label_map(tmp_path, folder, clip, tiny_checkpoint):
    import persam
    from persam.session.prompts import labels_from_prompts

    ckpt = ["--checkpoint", str(tiny_checkpoint)]
    out = tmp_path / "from_prompts"
    code = main(
        [
            "video",
            str(folder),
            "--box",
            "1:8,10,36,38",
            "--point",
            "2:64,50",
            "--negative-point",
            "2:5,90",
            "-o",
            str(out),
            *TINY,
            *ckpt,
        ]
    )
    assert code == 0
    model = persam.load("sam_tiny", tiny_checkpoint, device="cpu")
    labels = labels_from_prompts(
        model,
        clip.frames[0],
        {
            1: {"box_xyxy": (8, 10, 36, 38)},
            2: {"points_xy": [(64, 50), (5, 90)], "point_labels": [1, 0]},
        },
    )
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(np.asarray(Image.open(out / "00000.png")), labels)
    mask = tmp_path / "first.png"
    save_label_map(mask, labels)
    ref = tmp_path / "from_mask"
    assert main(["video", str(folder), "--mask", str(mask), "-o", str(ref), *TINY, *ckpt]) == 0
    for i in range(len(clip.frames)):
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / f"{i:05d}.png")), np.asarray(Image.open(ref / f"{i:05d}.png"))
        )


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--point", "1:200,10"], "object 1: point (200, 10) is outside the 128x96 photo"),
        (["--point", "0:10,10"], "object id 1..255"),
        (["--point", "10,10"], "ID:X,Y"),
        (["--box", "1:1,2,3,4", "--box", "1:5,6,7,8"], "two --box"),
        (["--box", "1:1,2,3"], "malformed"),
        ([], "exactly one of the two"),
        (["--point", "1:10,10", "--mask", "first.png"], "exactly one of the two"),
    ],
)
def test_bad_object_prompts_exit_2(tmp_path, folder, capsys, argv, expect):
    code = main(
        ["video", str(folder), *argv, "-o", str(tmp_path / "out"), *TINY, "--checkpoint", str(tmp_path / "missing.pth")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expect in err, err
