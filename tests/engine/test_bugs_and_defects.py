"""Bugs are never reported as bad input, and the engine's defects stay fixed, through the command line.

* an internal error (a method step patched to raise ``ValueError``) is "internal error", exit 70 and the
  traceback; in a batch that photo is listed as ``"failed"`` (its traceback in ``failed.log``) and the
  others are still written;
* a second run into a folder that a running one writes is refused in one line (``persam.io.lock``), and
  a killed run leaves no lock behind;
* the naming rule keeps folders (``dog/01.jpg``, ``dog/01.png``, ``cat/01.jpg`` from one folder);
* library messages speak of the library, not of command-line flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import persam
from conftest import synthetic_photo
from persam.cli.main import main
from persam.errors import OptionsError

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
SRC = str(Path(persam.__file__).resolve().parents[1])


def save(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_photo(120, 160, seed=seed)[0]).save(path)
    return path


def test_an_internal_error_is_a_bug_not_bad_input(tmp_path, refs, capsys, monkeypatch):
    """A ``ValueError`` from a method step: "internal error", status 70 and the traceback (not exit 2)."""
    import persam.session.photo as photo_module

    def broken(*args, **kwargs):
        raise ValueError("an invariant of the method broke")

    monkeypatch.setattr(photo_module, "masked_features", broken)  # PerSAM's target features
    assert main(["personalize", *refs, "-o", str(tmp_path / "c.persam"), *TINY]) == 70
    err = capsys.readouterr().err
    assert err.startswith("persam: internal error (a bug in persam, not a problem with your input): ValueError")
    assert "Traceback (most recent call last)" in err and "an invariant of the method broke" in err
    assert not (tmp_path / "c.persam").exists()


def test_a_batch_lists_the_failed_photo_and_writes_the_others(tmp_path, refs, capsys, monkeypatch):
    import persam.session.dispatch as dispatch

    real = dispatch.segment_photo

    def sometimes(concept, image, *args):
        if getattr(image, "shape", (0, 0))[:2] == (120, 161):  # the one odd-sized photo
            raise ValueError("an invariant of the method broke")
        return real(concept, image, *args)

    monkeypatch.setattr(dispatch, "segment_photo", sometimes)
    photos = tmp_path / "photos"
    save(photos / "a.png", 1)
    Image.fromarray(np.zeros((120, 161, 3), np.uint8)).save(photos / "b.png")
    save(photos / "c.png", 2)
    out = tmp_path / "out"
    assert main(["segment", *refs, str(photos), "-o", str(out), *TINY]) == 70
    captured = capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    status = {Path(e["input"]).name: e["status"] for e in manifest["inputs"]}
    assert status == {"a.png": "written", "b.png": "failed", "c.png": "written"}
    assert (out / "a.png").is_file() and (out / "c.png").is_file() and not (out / "b.png").exists()
    failed = next(e for e in manifest["inputs"] if e["status"] == "failed")
    assert "internal error" in failed["reason"] and "ValueError" in failed["reason"]
    log = (out / "failed.log").read_text()
    assert "Traceback" in log and "an invariant of the method broke" in log
    assert "1 failed" in captured.out and "failed.log" in captured.out


def test_the_bad_input_corpus_still_gives_one_line_and_status_2(tmp_path, refs, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["segment", "--ref", str(bad), "--ref-mask", refs[3], str(bad), "-o", str(tmp_path / "o"), *TINY]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("persam: error: ") and "bad.png" in line


# --- one run per folder -----------------------------------------------------------------------------------------

HOLD = """
import sys, time
from persam.io.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, refs, capsys):
    photo = save(tmp_path / "p.png", 4)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["segment", *refs, str(photo), "-o", str(out), "--finetune", *TINY]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "another persam run" in line and str(out) in line and str(holder.pid) in line
        assert not (out / "manifest.json").exists() and not (out / "p.png").exists()
    finally:
        holder.kill()  # like kill -9: the operating system releases the lock
        holder.wait()
    assert main(["segment", *refs, str(photo), "-o", str(out), *TINY]) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


# --- the naming rule --------------------------------------------------------------------------------------------


def test_names_keep_their_folders(tmp_path, refs):
    photos = tmp_path / "photos"
    save(photos / "dog" / "01.jpg", 1)
    save(photos / "dog" / "01.png", 2)
    save(photos / "cat" / "01.jpg", 3)
    out = tmp_path / "out"
    assert main(["segment", *refs, str(photos), "-o", str(out), *TINY]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["cat/01.png", "dog/01_jpg.png", "dog/01_png.png"]


def test_names_of_files_given_one_by_one_take_their_folders(tmp_path):
    from persam.io.naming import output_stems

    stems = output_stems([("a/cat/01.jpg", "01"), ("a/dog/01.jpg", "01"), ("b/x.jpg", "x")])
    assert [s.as_posix() for s in stems] == ["cat/01", "dog/01", "x"]


# --- messages from the right layer ------------------------------------------------------------------------------


def test_library_messages_name_no_command_line_flag(tmp_path, tiny_model):
    import persam
    from persam.errors import CheckpointError, MissingInputError

    with pytest.raises((CheckpointError, MissingInputError)) as offline:
        persam.load("vit_b", checkpoint=tmp_path / "missing.pth")
    assert "--" not in str(offline.value)
    with pytest.raises(OptionsError) as parts:
        tiny_model.personalize(
            synthetic_photo(120, 160, seed=50)[0], synthetic_photo(120, 160, seed=50)[1], parts=(2, 3)
        )
    assert "--" not in str(parts.value) and parts.value.field == "parts"


def test_a_reference_mask_sam_made_too_small_names_the_photo(tmp_path, capsys, one_pixel_prompt_masks):
    """SAM's mask for a --ref-box that covers no feature cell: the message names the reference photo."""
    ref = save(tmp_path / "ref.png", 5)
    photo = save(tmp_path / "p.png", 6)
    code = main(["segment", "--ref", str(ref), "--ref-box", "3,3,40,40", str(photo), "-o", str(tmp_path / "o"), *TINY])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the given array" not in line and f"{ref} (SAM's mask for the prompts)" in line
    assert "covers no whole cell" in line


def test_an_output_file_under_a_file_names_its_own_option(tmp_path, capsys):
    """The output-folder rule is the engine's; the command line names the option it came with."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["bench", "--json", str(blocker / "x.json"), *TINY]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"persam: error: --json {blocker}: is a file") and " -o:" not in line


def test_the_app_names_colliding_uploads_by_the_one_rule(tmp_path, tiny_model):
    """Uploads ``a.jpg`` and ``a.png`` get ``a_jpg.png`` and ``a_png.png``, as ``persam segment`` names them."""
    import zipfile

    from persam.app.batch import BatchOptions, segment_uploads

    uploads = [save(tmp_path / "up" / "a.jpg", 1), save(tmp_path / "up2" / "a.png", 2)]
    ref, mask = synthetic_photo(120, 160, seed=50)
    result = segment_uploads(tiny_model.personalize(ref, mask), uploads, BatchOptions(), tmp_path / "work")
    names = sorted(n for n in zipfile.ZipFile(result.zip_path).namelist() if n.endswith(".png"))
    assert names == ["a_jpg.png", "a_png.png"]


@pytest.mark.parametrize("stem", ["../escape", "a/../../escape", "/tmp/escape"])
def test_an_output_name_outside_the_output_folder_is_a_bug(stem):
    from persam.engine.job import Source

    with pytest.raises(ValueError, match="is not inside the output folder") as info:
        Source(Path("x.jpg"), "x.jpg", Path(stem))
    assert not isinstance(info.value, persam.errors.PersamError)  # a front end's bug, not the user's input
    assert Source(Path("x.jpg"), "x.jpg", Path("trip/x")).stem == Path("trip/x")


def test_references_named_by_the_caller_are_named_so_in_messages(tiny_model):
    """``personalize(names=...)``: a front end holding references in memory names them in its own words."""
    from persam.errors import InputError

    ref, mask = synthetic_photo(120, 160, seed=50)
    empty = np.zeros_like(mask)
    with pytest.raises(InputError) as named:
        tiny_model.personalize([ref, ref], [mask, empty], names=["task 3", "task 4"])
    assert str(named.value).startswith("task 4: ") and "empty" in str(named.value)
    with pytest.raises(OptionsError) as counted:
        tiny_model.personalize([ref], [mask], names=["task 3", "task 4"])
    assert "1 reference photos and 2 names" in str(counted.value)


def test_a_concept_is_learned_as_its_method_says(tiny_model):
    """``learned_as``: what a front end keeping concepts on disk (Label Studio's ML backend) checks before it
    reuses one; each learning option alone makes it differ."""
    from persam.engine.concept import learned_as
    from persam.engine.spec import MethodSpec

    ref, mask = synthetic_photo(120, 160, seed=50)
    plain = tiny_model.personalize(ref, mask)
    assert learned_as(plain, MethodSpec())
    assert not learned_as(plain, MethodSpec(finetune=True))
    assert not learned_as(plain, MethodSpec(prior="part-aware"))
    assert not learned_as(plain, MethodSpec(without=("negative-point",)))
    assert learned_as(tiny_model.personalize(ref, mask, prior="part-aware"), MethodSpec(prior="part-aware"))
    assert learned_as(tiny_model.personalize(ref, mask, finetune=True), MethodSpec(finetune=True))
