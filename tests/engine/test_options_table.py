"""Every option of the job spec, through every front end: honoured (it changes the masks or the manifest
in the way it promises) or refused with the same message everywhere.

Front ends: the command line (``persam segment`` / ``personalize``), the engine's Python entry
(``run_job``), the session API (``personalize`` / ``segment_instances``) and the web app's functions
(``app.workspace.learn``, ``app.batch``). A re-run into the same folder that differs in any one field of
the spec redoes the photos (``test_every_resumed_field_changes_the_key`` walks the spec's fields, so a
new field without an entry in ``CHANGED`` fails it).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_photo
from extras import require
from persam.cli.main import main
from persam.engine.resume import spec_key, spec_record
from persam.engine.runner import run_job
from persam.engine.spec import (
    ConceptFile,
    ExecutorSpec,
    GivenConcept,
    JobSpec,
    MethodSpec,
    ModelSpec,
    OutputSpec,
    RayOptions,
    References,
)
from persam.errors import OptionsError

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
TINY_SPEC = ModelSpec("sam_tiny", device="cpu", random_weights=True)
#: the synthetic reference's object lies in this box (``synthetic_photo(120, 160, seed=50)``)
BOX = "20,20,100,90"


@pytest.fixture
def scene(tmp_path: Path) -> dict:
    """A reference photo with its mask and two target photos, saved under ``tmp_path``."""
    ref, mask = synthetic_photo(120, 160, seed=50)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(120, 160, seed=60 + i)[0]).save(photos / f"t{i}.png")
    ys, xs = np.nonzero(mask)
    box = f"{xs.min()},{ys.min()},{xs.max()},{ys.max()}"
    return {"ref": str(tmp_path / "ref.png"), "mask": str(tmp_path / "mask.png"), "photos": str(photos), "box": box}


def segment(scene: dict, out: Path, *extra: str, ref: tuple[str, ...] | None = None) -> tuple[int, dict]:
    refs = ref if ref is not None else ("--ref", scene["ref"], "--ref-mask", scene["mask"])
    code = main(["segment", *refs, scene["photos"], "-o", str(out), *extra, *TINY])
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    return code, manifest


def masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("t*.png")) if "_overlay" not in p.name}


# --- honoured: each option changes the outputs the way it promises -------------------------------------------


def _finetune(m, out):
    return m["method"] == "persam-f"


def _part_aware(m, out):
    return all("parts" in e and len(e["parts"][0]["candidates"]) == 5 for e in m["inputs"])


def _parts(m, out):
    return all("parts" in e and [c["parts"] for c in e["parts"][0]["candidates"]] == [2, 3] for e in m["inputs"])


def _without_refinement(m, out):  # one decoder pass per mask instead of three
    return all(len(e["prompts"][0]) == 1 for e in m["inputs"])


def _instances(m, out):  # a label map 0..N, not a 0/255 mask
    return all(mask.max() <= 3 for mask in masks(out).values())


def _absent(m, out):
    return all(not e["present"] for e in m["inputs"]) and all(not mask.any() for mask in masks(out).values())


def _coco(m, out):
    file = out / "annotations.json"
    return file.is_file() and len(json.loads(file.read_text())["images"]) == 2


def _overlay(m, out):
    return all("overlay" in e and (out / e["overlay"]).is_file() for e in m["inputs"])


def _bf16(m, out):
    return m["weights"]["precision"] == "bf16"


HONOURED = [
    (["--finetune"], _finetune),
    (["--prior", "part-aware"], _part_aware),
    (["--prior", "part-aware", "--parts", "2..3"], _parts),
    (["--without", "refinement"], _without_refinement),
    (["--max-instances", "3"], _instances),
    (["--presence-threshold", "10"], _absent),
    (["--format", "coco"], _coco),
    (["--overlay"], _overlay),
    (["--precision", "bf16"], _bf16),
]


@pytest.mark.parametrize("extra, honoured", HONOURED, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_each_option_is_honoured_on_the_command_line(tmp_path, scene, extra, honoured):
    code, manifest = segment(scene, tmp_path / "out", *extra)
    assert code == 0
    assert honoured(manifest, tmp_path / "out")
    # the baseline does not already show it (the check can fail)
    _, base = segment(scene, tmp_path / "base")
    assert not honoured(base, tmp_path / "base")


@pytest.mark.parametrize("prompt", [["--ref-box"], ["--ref-point"]])
def test_part_aware_prior_with_reference_prompts_is_honoured(tmp_path, scene, prompt):
    """The prompted reference path learns with the prior and the part counts (it once dropped them)."""
    mask = np.asarray(Image.open(scene["mask"])) > 0
    ys, xs = np.nonzero(mask)
    value = scene["box"] if prompt == ["--ref-box"] else f"{int(xs.mean())},{int(ys.mean())}"
    ref = ("--ref", scene["ref"], prompt[0], value)
    out = tmp_path / "out"
    code, manifest = segment(scene, out, "--prior", "part-aware", "--parts", "2..3", ref=ref)
    assert code == 0 and _parts(manifest, out)
    # a re-run with another prior redoes every photo (the prior is part of the resume key)
    code, again = segment(scene, out, ref=ref)
    assert code == 0 and "parts" not in again["inputs"][0]
    assert again["spec_key"] != manifest["spec_key"]
    concept = tmp_path / "c.persam"
    assert main(["personalize", *ref, "--prior", "part-aware", "--parts", "2..3", "-o", str(concept), *TINY]) == 0
    from persam.session.concept_file import read_concept_metadata

    meta, _ = read_concept_metadata(concept)
    assert meta["prior"] == "part-aware" and meta["parts"]["range"] == [2, 3]


# --- refused: the same message from every front end -------------------------------------------------------------


def cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


REFUSED = [
    # (command-line extra, spec change, the message's words)
    (["--parts", "2..3"], {"method": MethodSpec(parts=(2, 3))}, "part counts apply to the part-aware prior only"),
    (
        ["--prior", "part-aware", "--finetune"],
        {"method": MethodSpec(prior="part-aware", finetune=True)},
        "the part-aware prior is training-free",
    ),
    (
        ["--prior", "part-aware", "--max-instances", "2"],
        {"method": MethodSpec(prior="part-aware", max_instances=2)},
        "several instances are found with the similarity prior only",
    ),
    (["--max-instances", "0"], {"method": MethodSpec(max_instances=0)}, "a whole number from 1 to 255"),
    (["--workers", "0"], {"executor": ExecutorSpec(workers=0)}, "workers must be at least 1"),
]


@pytest.mark.parametrize("extra, change, words", REFUSED, ids=[" ".join(r[0]) for r in REFUSED])
def test_each_refusal_is_the_same_everywhere(tmp_path, scene, capsys, tiny_model, extra, change, words):
    line = cli_error(
        capsys,
        [
            "segment",
            "--ref",
            scene["ref"],
            "--ref-mask",
            scene["mask"],
            scene["photos"],
            "-o",
            str(tmp_path / "o"),
            *extra,
            *TINY,
        ],
    )
    assert words in line
    message = line.split(": ", 3)[-1]  # after "persam: error: --flag: "
    spec = JobSpec(
        References((scene["ref"],), (scene["mask"],)),
        OutputSpec(str(tmp_path / "o2")),
        targets=(scene["photos"],),
        model=TINY_SPEC,
    )
    with pytest.raises(OptionsError) as engine:
        run_job(dataclasses.replace(spec, **change))
    assert str(engine.value) == message
    method = change.get("method")
    if method is None:
        return
    # the session API refuses the learning options and the instances with the same words
    with pytest.raises(OptionsError) as api:
        concept = tiny_model.personalize(
            scene["ref"], scene["mask"], finetune=method.finetune, prior=method.prior, parts=method.parts
        )
        concept.segment_instances(scene["ref"], max_instances=method.max_instances)
    assert str(api.value) == message


def test_app_refuses_with_the_session_words(tmp_path, scene, tiny_model):
    require("gradio")
    from persam.app import workspace
    from persam.app.batch import BatchOptions

    ws = workspace.Workspace()
    ws.references.append(
        workspace.Reference(
            photo=np.asarray(Image.open(scene["ref"])), mask=np.asarray(Image.open(scene["mask"])) > 0, name="ref"
        )
    )
    with pytest.raises(OptionsError, match="part counts apply to the part-aware prior only"):
        workspace.learn(ws, tiny_model, finetune=False, without=[], presence_threshold=None, parts=(2, 3))
    with pytest.raises(OptionsError, match="the part-aware prior is training-free"):
        workspace.learn(ws, tiny_model, finetune=True, without=[], presence_threshold=None, prior="part-aware")
    with pytest.raises(OptionsError, match="a whole number from 1 to 255"):
        BatchOptions(max_instances=0)


# --- the resume key covers every field --------------------------------------------------------------------------

#: For every field that enters the resume key: another value (a field missing here fails the walk below).
CHANGED = {
    "References.photos": lambda s: (s["ref2"],),
    "References.masks": lambda s: (s["mask2"],),
    "References.box": lambda s: (1.0, 2.0, 30.0, 40.0),
    "References.points": lambda s: ((5.0, 6.0),),
    "References.point_labels": lambda s: (1,),
    "References.label": lambda s: 3,
    "JobSpec.index": lambda s: "album.idx",
    "MethodSpec.finetune": lambda s: True,
    "MethodSpec.without": lambda s: ("refinement",),
    "MethodSpec.prior": lambda s: "part-aware",
    "MethodSpec.parts": lambda s: (2, 3),
    "MethodSpec.max_instances": lambda s: 4,
    "MethodSpec.detect_absent": lambda s: True,
    "MethodSpec.presence_threshold": lambda s: 0.5,
    "OutputSpec.format": lambda s: "coco",
    "OutputSpec.overlay": lambda s: True,
    "ModelSpec.model": lambda s: "sam2_tiny",
    "ModelSpec.precision": lambda s: "bf16",
    "ModelSpec.random_weights": lambda s: False,
    "ModelSpec.runtime": lambda s: "openvino",
    "ConceptFile.path": lambda s: s["ref2"],
    "GivenConcept.key": lambda s: "another",
}


def _resumed_fields(value, owner: str = "JobSpec"):
    """(dotted name, setter) of every resumed leaf field under ``value``."""
    for f in dataclasses.fields(value):
        if not f.metadata.get("resume", True):
            continue
        name, child = f"{type(value).__name__}.{f.name}", getattr(value, f.name)
        if dataclasses.is_dataclass(child):
            for sub, setter in _resumed_fields(child):
                yield (
                    sub,
                    (lambda v, f=f, setter=setter, parent=value: dataclasses.replace(parent, **{f.name: setter(v)})),
                )
        else:
            yield name, (lambda v, f=f, parent=value: dataclasses.replace(parent, **{f.name: v}))


@pytest.mark.parametrize("concept", ["references", "file", "given"])
def test_every_resumed_field_changes_the_key(tmp_path, scene, concept):
    for name, data in (("ref2", b"other photo"), ("mask2", b"other mask")):
        (tmp_path / name).write_bytes(data)
        scene[name] = str(tmp_path / name)
    source = {
        "references": References((scene["ref"],), (scene["mask"],)),
        "file": ConceptFile(scene["mask"]),
        "given": GivenConcept("one"),
    }[concept]
    spec = JobSpec(source, OutputSpec(str(tmp_path / "o")), targets=(scene["photos"],), model=TINY_SPEC)
    base = spec_key(spec_record(spec))
    seen = []
    for name, setter in _resumed_fields(spec):
        assert name in CHANGED, f"{name} enters the resume key: give it another value in CHANGED"
        changed = setter(CHANGED[name](scene))
        assert spec_key(spec_record(changed)) != base, f"changing {name} leaves the resume key as it was"
        seen.append(name)
    assert len(seen) >= 14
    # the fields left out say why, and changing them keeps the key
    for changed in (
        dataclasses.replace(spec, targets=("elsewhere",)),
        dataclasses.replace(spec, executor=ExecutorSpec(workers=3)),
        dataclasses.replace(spec, output=dataclasses.replace(spec.output, overwrite=True, folder="x")),
        dataclasses.replace(spec, model=dataclasses.replace(spec.model, device="cuda")),
    ):
        assert spec_key(spec_record(changed)) == base


RERUN = [
    ["--finetune"],
    ["--without", "refinement"],
    ["--max-instances", "2"],
    ["--detect-absent"],
    ["--presence-threshold", "0.2"],
    ["--format", "coco"],
    ["--overlay"],
]


@pytest.mark.parametrize("extra", RERUN, ids=" ".join)
def test_a_rerun_that_differs_in_one_field_redoes_the_photos(tmp_path, scene, capsys, extra):
    out = tmp_path / "out"
    assert segment(scene, out)[0] == 0
    assert "2 by an earlier run" in (segment(scene, out)[0] == 0 and capsys.readouterr().out)
    code, manifest = segment(scene, out, *extra)
    assert code == 0
    line = capsys.readouterr().out
    assert "2 written" in line and "by an earlier run" not in line


# --- the same options on Ray and in the app ---------------------------------------------------------------------

RAY_HONOURED = [
    (["--presence-threshold", "10"], _absent),
    (["--max-instances", "3"], _instances),
    (["--format", "coco"], _coco),
    (["--overlay"], _overlay),
]


def test_the_options_that_apply_on_ray_are_honoured_there(tmp_path, scene):
    """On Ray (an indexed album, a concept file): the output and instance options change what is written."""
    ray = require("ray")
    require("pyarrow")
    store, concept = tmp_path / "store", tmp_path / "c.persam"
    assert main(["index", scene["photos"], "-o", str(store), "--dtype", "float32", *TINY]) == 0
    assert main(["personalize", "--ref", scene["ref"], "--ref-mask", scene["mask"], "-o", str(concept), *TINY]) == 0
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        base = tmp_path / "base"
        run = ["segment", "--index", str(store), "--concept", str(concept), "--ray", *TINY]
        assert main([*run, "-o", str(base)]) == 0
        base_manifest = json.loads((base / "manifest.json").read_text())
        for i, (extra, honoured) in enumerate(RAY_HONOURED):
            out = tmp_path / f"ray{i}"
            assert main([*run, "-o", str(out), *extra]) == 0
            assert honoured(json.loads((out / "manifest.json").read_text()), out), extra
            assert not honoured(base_manifest, base), extra
        # and refused on Ray with the engine's words
        with pytest.raises(OptionsError, match="local workers have no effect on Ray"):
            run_job(
                JobSpec(
                    ConceptFile(str(concept)),
                    OutputSpec(str(tmp_path / "o")),
                    index=str(store),
                    model=TINY_SPEC,
                    executor=ExecutorSpec(workers=2, ray=RayOptions()),
                )
            )
    finally:
        ray.shutdown()


def test_the_app_honours_its_options(tmp_path, scene, tiny_model):
    """The web app's batch: several instances give label maps; a presence threshold gives absent photos."""
    require("gradio")
    from persam.app.batch import BatchOptions, segment_uploads

    uploads = sorted(str(p) for p in Path(scene["photos"]).glob("*.png"))
    concept = tiny_model.personalize(scene["ref"], scene["mask"])

    def run(options, name):
        result = segment_uploads(concept, uploads, options, tmp_path / name)
        out = result.zip_path.parent / "out"
        return json.loads((out / "manifest.json").read_text()), out

    base = run(BatchOptions(), "base")
    many = run(BatchOptions(max_instances=3), "many")
    assert _instances(*many) and not _instances(*base)
    concept.presence_threshold = 10.0
    absent = run(BatchOptions(detect_absent=True), "absent")
    assert _absent(*absent) and not _absent(*base)


def test_the_run_options_are_honoured(tmp_path, scene, capsys):
    """--max-pixels, --quiet, --overwrite, --workers and --label, each against a run without it."""
    out = tmp_path / "out"
    assert segment(scene, out)[0] == 0
    assert "2 written" in capsys.readouterr().out
    # --quiet: no summary line
    assert segment(scene, tmp_path / "quiet", "--quiet")[0] == 0
    assert capsys.readouterr().out == ""
    # --overwrite: the photos an earlier run wrote are done again
    assert segment(scene, out)[0] == 0 and "2 by an earlier run" in capsys.readouterr().out
    assert segment(scene, out, "--overwrite")[0] == 0 and "by an earlier run" not in capsys.readouterr().out
    # --max-pixels: photos over it are skipped (the reference too would be: it is 160x120 like the photos)
    code, manifest = segment(scene, tmp_path / "small", "--max-pixels", "19200")
    assert code == 0 and [e["status"] for e in manifest["inputs"]] == ["written", "written"]
    code = main(["segment", "--ref", scene["ref"], "--ref-mask", scene["mask"], scene["photos"],
                 "-o", str(tmp_path / "tiny"), "--max-pixels", "19199", *TINY])  # fmt: skip
    assert code == 2 and "19199" in capsys.readouterr().err
    # --workers: the photos segmented at once (the summary of the engine's result says how many)
    spec = JobSpec(
        References((scene["ref"],), (scene["mask"],)),
        OutputSpec(str(tmp_path / "w")),
        targets=(scene["photos"],),
        model=TINY_SPEC,
    )
    assert run_job(dataclasses.replace(spec, executor=ExecutorSpec(workers=1))).workers == 1
    again = dataclasses.replace(spec, output=OutputSpec(str(tmp_path / "w2")), executor=ExecutorSpec(workers=2))
    assert run_job(again).workers == 2
    # --label: only that value of a multi-label reference mask is the object
    labels = np.asarray(Image.open(scene["mask"])) > 0
    multi = np.where(labels, 2, 0).astype(np.uint8)
    multi[:10, :10] = 1  # another object, labelled 1
    Image.fromarray(multi).save(tmp_path / "multi.png")
    from persam.session.concept_file import read_concept_metadata

    def concept(name: str, mask: str, *extra: str) -> dict:
        path = tmp_path / f"{name}.persam"
        assert main(["personalize", "--ref", scene["ref"], "--ref-mask", mask, "-o", str(path), *extra, *TINY]) == 0
        return read_concept_metadata(path)[1]

    by_label = concept("label2", str(tmp_path / "multi.png"), "--label", "2")
    plain = concept("plain", scene["mask"])
    everything = concept("all", str(tmp_path / "multi.png"))
    assert all(torch.equal(by_label[k], plain[k]) for k in plain)  # label 2 is exactly the object's mask
    assert not torch.equal(everything["target_mean"], plain["target_mean"])  # without it, both regions count
