"""persam inside a real Label Studio server (``ls_fixtures.label_studio``): pre-annotation through its API,
and the ML backend it connects to.

- ``persam label-studio annotate``: the predictions read back through the API and decoded by the SDK
  equal ``persam segment``'s masks with the same reference (IoU >= 0.999); a second run encodes no photo
  and rewrites no prediction (counted); ``--overwrite`` rewrites them.
- ``persam label-studio serve`` connected as the project's ML backend through the API: predictions asked
  of Label Studio (not the backend) equal ``persam segment``'s; an interactive click gives SAM's own mask;
  the webhook re-learns the concept on disk; a restart keeps it; bad requests get a one-line error and
  the next good request succeeds.

About 3 minutes here (the server's start is about one of them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from ls_fixtures import cat_photos, label_studio  # fixtures
from ls_server import decode, free_port, http_error, iou, stop, wait_for
from PIL import Image

from conftest import synthetic_photo
from persam.cli.main import main

TINY = ["--model", "sam_tiny", "--random-weights", "--device", "cpu"]
#: masks of the same reference, weights and photo agree to this IoU (float32 embeddings in the index)
IOU = 0.999


def read_mask(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("L")) > 0


@pytest.fixture(scope="module")
def segment_masks(cat_photos, tmp_path_factory) -> dict[str, np.ndarray]:
    """``persam segment``'s masks of photos 2 and 3 with photo 1 and its mask as the reference."""
    photos, masks = cat_photos
    out = tmp_path_factory.mktemp("segment")
    assert (
        main(
            [
                "segment",
                "--ref",
                str(photos[0]),
                "--ref-mask",
                str(masks[0]),
                *map(str, photos[1:]),
                "-o",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    return {p.name: read_mask(out / f"{p.stem}.png") for p in photos[1:]}


@pytest.fixture
def counted_encodes(monkeypatch) -> list[int]:
    """Counts the image encoder's runs of the models ``persam`` commands load in this process."""
    from persam.session.model_spec import ModelSpec

    calls = [0]
    original = ModelSpec.load

    def load(self):
        model = original(self)
        encode = model.backend.encode

        def counting(*args, **kwargs):
            calls[0] += 1
            return encode(*args, **kwargs)

        model.backend.encode = counting
        return model

    monkeypatch.setattr(ModelSpec, "load", load)
    return calls


def project_with_reference(server, cat_photos, title: str) -> tuple[int, list[dict]]:
    photos, masks = cat_photos
    project = server.new_project(title)
    tasks = server.import_photos(project, photos)
    by_name = {t["data"]["image"].rsplit("-", 1)[-1]: t for t in tasks}
    server.annotate(by_name[photos[0].name]["id"], read_mask(masks[0]))
    return project, [by_name[p.name] for p in photos]


def test_annotate_matches_segment_resumes_and_overwrites(
    label_studio, cat_photos, segment_masks, counted_encodes, tmp_path, capsys
):
    project, tasks = project_with_reference(label_studio, cat_photos, "annotate")
    photos, _ = cat_photos
    command = ["label-studio", "annotate", "--url", label_studio.url, "--api-key", label_studio.token]
    command += ["--project", str(project), "--work", str(tmp_path / "work"), *TINY]

    assert main(command) == 0
    line = capsys.readouterr().out.strip()
    assert "2 task(s) predicted (2 region(s))" in line and "3 photo(s) encoded" in line, line
    assert counted_encodes[0] == 3  # the reference and the two targets, once each
    first = {}
    for task, photo in zip(tasks[1:], photos[1:]):
        (prediction,) = label_studio.predictions(task["id"])
        assert prediction["model_version"].startswith("persam-")
        assert iou(decode(prediction), segment_masks[photo.name]) >= IOU
        first[task["id"]] = prediction["id"]
    assert label_studio.predictions(tasks[0]["id"]) == []  # the annotated task is not predicted
    assert (tmp_path / "work" / "concepts" / f"project-{project}").is_dir()

    # a second run: nothing encoded, nothing rewritten
    assert main(command) == 0
    line = capsys.readouterr().out.strip()
    assert "0 task(s) predicted" in line and "2 already predicted" in line and "0 photo(s) encoded" in line, line
    assert counted_encodes[0] == 3
    assert {t["id"]: [p["id"] for p in label_studio.predictions(t["id"])] for t in tasks[1:]} == {
        k: [v] for k, v in first.items()
    }

    # --overwrite: rewritten (new predictions replace the old ones), still nothing encoded
    assert main([*command, "--overwrite"]) == 0
    line = capsys.readouterr().out.strip()
    assert "2 task(s) predicted (2 region(s), 2 replaced)" in line and "0 photo(s) encoded" in line, line
    assert counted_encodes[0] == 3
    for task, photo in zip(tasks[1:], photos[1:]):
        (prediction,) = label_studio.predictions(task["id"])
        assert prediction["id"] != first[task["id"]]
        assert iou(decode(prediction), segment_masks[photo.name]) >= IOU


#: brush predictions, rectangle references: the box tool beside the brush, with the same label
BOX_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="cat"/></BrushLabels>'
    '<RectangleLabels name="box" toName="image"><Label value="cat"/></RectangleLabels></View>'
)


def box_scene(folder: Path) -> tuple[list[Path], tuple[int, int, int, int]]:
    """A synthetic reference photo and two targets as JPEG files, and the XYXY box of the reference's object
    (the tiny random model makes a usable mask from it, as in tests/engine/test_options_table.py)."""
    ref, mask = synthetic_photo(120, 160, seed=50)
    photos = [folder / "boxref.jpg", folder / "boxt0.jpg", folder / "boxt1.jpg"]
    Image.fromarray(ref).save(photos[0], quality=95)
    for i, path in enumerate(photos[1:]):
        Image.fromarray(synthetic_photo(120, 160, seed=60 + i)[0]).save(path, quality=95)
    ys, xs = np.nonzero(mask)
    return photos, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def test_a_rectangle_reference_is_a_box_prompt(label_studio, tmp_path, capsys):
    """A submitted rectangle is the reference's box (SAM makes its mask): the predictions equal
    ``persam segment --ref PHOTO --ref-box X0,Y0,X1,Y1`` with the same box."""
    photos, box = box_scene(tmp_path)
    project = label_studio.new_project("rectangle reference", BOX_CONFIG)
    tasks = label_studio.import_photos(project, photos)
    by_name = {t["data"]["image"].rsplit("-", 1)[-1]: t for t in tasks}
    label_studio.annotate_box(by_name[photos[0].name]["id"], box, (120, 160))
    command = ["label-studio", "annotate", "--url", label_studio.url, "--api-key", label_studio.token, *TINY]
    assert main([*command, "--project", str(project), "--work", str(tmp_path / "work")]) == 0
    assert "2 task(s) predicted" in capsys.readouterr().out
    out = tmp_path / "segment"
    ref = ["--ref", str(photos[0]), "--ref-box", ",".join(map(str, box))]
    assert main(["segment", *ref, *map(str, photos[1:]), "-o", str(out), *TINY]) == 0
    for photo in photos[1:]:
        (prediction,) = label_studio.predictions(by_name[photo.name]["id"])
        assert {r["type"] for r in prediction["result"]} == {"brushlabels"}
        expected = read_mask(out / f"{photo.stem}.png")
        assert expected.any() and not expected.all() and iou(decode(prediction), expected) >= IOU


def test_a_rectangle_sam_makes_too_small_a_mask_of_names_its_task(
    label_studio, tmp_path, capsys, one_pixel_prompt_masks
):
    """SAM's mask for a rectangle reference that covers no feature cell: one line naming the task (not
    "the given array", the words of a Python caller's own arrays), exit 2."""
    photos, box = box_scene(tmp_path)
    project = label_studio.new_project("rectangle too small", BOX_CONFIG)
    tasks = label_studio.import_photos(project, photos)
    ref_task = next(t["id"] for t in tasks if t["data"]["image"].endswith(photos[0].name))
    label_studio.annotate_box(ref_task, box, (120, 160))
    command = ["label-studio", "annotate", "--url", label_studio.url, "--api-key", label_studio.token, *TINY]
    capsys.readouterr()
    assert main([*command, "--project", str(project), "--work", str(tmp_path / "work")]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert f"task {ref_task}: the annotation of 'cat', with SAM's mask for its rectangle: " in line, line
    assert "covers no whole cell" in line and "the given array" not in line and "Traceback" not in captured.err


def test_annotate_with_the_part_aware_prior_matches_segment(label_studio, cat_photos, tmp_path, capsys):
    """``--prior part-aware`` is honoured: the predictions equal ``persam segment --prior part-aware``'s masks
    (and differ from the similarity prior's concept: another ``model_version``)."""
    project, tasks = project_with_reference(label_studio, cat_photos, "part-aware")
    photos, masks = cat_photos
    command = ["label-studio", "annotate", "--url", label_studio.url, "--api-key", label_studio.token]
    command += ["--project", str(project), "--work", str(tmp_path / "work"), *TINY]
    assert main([*command, "--prior", "part-aware"]) == 0
    out = tmp_path / "segment"
    ref = ["--ref", str(photos[0]), "--ref-mask", str(masks[0]), "--prior", "part-aware"]
    assert main(["segment", *ref, *map(str, photos[1:]), "-o", str(out), *TINY]) == 0
    versions = set()
    for task, photo in zip(tasks[1:], photos[1:]):
        (prediction,) = label_studio.predictions(task["id"])
        versions.add(prediction["model_version"])
        assert iou(decode(prediction), read_mask(out / f"{photo.stem}.png")) >= IOU
    capsys.readouterr()
    assert main(command) == 0  # the similarity prior: a concept of its own, predicted beside it
    assert "2 task(s) predicted" in capsys.readouterr().out
    assert len({p["model_version"] for t in tasks[1:] for p in label_studio.predictions(t["id"])} - versions) == 1


def test_annotate_refusals_are_one_line(label_studio, tmp_path, capsys):
    base = ["label-studio", "annotate", "--url", label_studio.url, "--work", str(tmp_path), *TINY]
    assert main([*base, "--api-key", "not-the-key", "--project", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused the API key" in err[0], err
    assert main([*base, "--api-key", label_studio.token, "--project", "999999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "project 999999" in err[0] and "not found" in err[0], err


def post(url: str, body: object, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, http_error(exc)


def start_backend(tmp_path: Path, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "persam", "label-studio", "serve", "--port", str(port), *TINY]
    command += ["--work", str(tmp_path / "work"), "--concepts", str(tmp_path / "concepts")]
    log = open(tmp_path / f"backend-{port}.log", "wb")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health", proc, 120, "persam label-studio serve")
    return proc, url


def test_backend_through_label_studio(label_studio, cat_photos, segment_masks, tmp_path, tiny_model):
    project, tasks = project_with_reference(label_studio, cat_photos, "backend")
    photos, masks = cat_photos
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    proc, backend = start_backend(tmp_path, env)
    try:
        # connect it as the project's ML backend, and ask Label Studio for predictions of two tasks
        label_studio.call("POST", "/api/ml", {"url": backend, "project": project, "title": "persam"})
        ids = [t["id"] for t in tasks[1:]]
        answer = label_studio.call(
            "POST",
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
            {"selectedItems": {"all": False, "included": ids}},
            timeout=300,
        )
        assert answer["processed_items"] == 2, answer
        for task, photo in zip(tasks[1:], photos[1:]):
            (prediction,) = label_studio.predictions(task["id"])
            assert iou(decode(prediction), segment_masks[photo.name]) >= IOU
        (concept_file,) = (tmp_path / "concepts" / f"project-{project}").glob("cat-*.persam")
        learned = concept_file.read_bytes()

        # interactive: a click with the smart keypoint tool gives SAM's own mask for it
        h, w = read_mask(masks[1]).shape
        x, y = 0.5 * w, 0.5 * h
        click = {
            "type": "keypointlabels",
            "from_name": "kp",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {"x": 50.0, "y": 50.0, "keypointlabels": ["cat"]},
        }
        body = {"tasks": [tasks[1]], "project": f"{project}.1", "params": {"context": {"result": [click]}}}
        status, answer = post(backend + "/predict", body)
        assert status == 200, answer
        expected = tiny_model.mask_from_prompts(str(photos[1]), points_xy=[[x, y]], point_labels=[1]).mask
        assert iou(decode(answer["results"][0]), expected) >= IOU

        # bad requests: an error response of one line each, and the server goes on
        bad_task = {**tasks[1], "id": 10**6, "data": {"image": "/data/upload/999/missing.jpg"}}
        wrong_label = {**click, "value": {**click["value"], "keypointlabels": ["zebra"]}}
        no_image = '<View><BrushLabels name="tag" toName="image"><Label value="cat"/></BrushLabels></View>'
        bad = [
            ("/predict", None, b"{not json"),
            ("/predict", {"tasks": [tasks[1]], "project": "999999.1"}, None),
            ("/predict", {**body, "params": {"context": {"result": [wrong_label]}}}, None),
            ("/predict", {"tasks": [bad_task], "project": f"{project}.1"}, None),
            ("/setup", {"project": f"{project}.1", "schema": no_image}, None),
        ]
        for path, request, raw in bad:
            status, answer = post(backend + path, request, raw)
            assert status == 400, (path, answer)
            assert answer["status"] == "error" and "\n" not in answer["error"] and answer["error"], answer
        status, answer = post(backend + "/predict", body)
        assert status == 200 and answer["results"][0]["result"], answer

        # the webhook Label Studio made when the backend was connected: a new annotation, submitted through
        # the API, has Label Studio call /webhook, and the concept on disk is learned again with it
        label_studio.annotate(tasks[2]["id"], read_mask(masks[2]))
        end = time.monotonic() + 180
        while concept_file.read_bytes() == learned and time.monotonic() < end:
            time.sleep(1)
        relearned = concept_file.read_bytes()
        assert relearned != learned, "Label Studio's webhook did not re-learn the concept"
        from persam.session.concept_file import concept_key, load_concept

        concept = load_concept(concept_file, tiny_model)
        version = f"persam-{concept_key(concept)[:16]}"
        # a webhook of another action is answered, and ignored
        status, answer = post(backend + "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": project}})
        assert status == 200 and answer["status"] == "ignored", answer
    finally:
        stop(proc)

    # a restart loses nothing learned: the concept is read from its file, Label Studio is not asked
    proc, backend = start_backend(tmp_path, env)
    try:
        status, answer = post(
            backend + "/predict",
            {
                "tasks": [tasks[1]],
                "project": f"{project}.1",
                "label_config": label_studio.call("GET", f"/api/projects/{project}")["label_config"],
            },
        )
        assert status == 200, answer
        assert answer["results"][0]["model_version"] == version and answer["results"][0]["result"]
        assert concept_file.read_bytes() == relearned
    finally:
        stop(proc)
