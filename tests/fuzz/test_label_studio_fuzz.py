"""Fuzzed Label Studio payloads: the labeling-config reader, the region decoders (brush RLE, polygons,
rectangles, keypoints) and the ML backend's request bodies give a valid result or a one-line
``PersamError`` for any input (the style and profile of ``test_readers_fuzz``); a mask written as a brush
region reads back as the same mask.
"""

from __future__ import annotations

import functools
import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_readers_fuzz import Sandbox, mutated, mutated_from, outcome

from extras import require

require("label_studio_sdk")

CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image"><Label value="cat"/>'
    '</BrushLabels><KeyPointLabels name="kp" toName="image" smart="true"><Label value="cat"/></KeyPointLabels>'
    '<RectangleLabels name="box" toName="image"><Label value="dog"/></RectangleLabels></View>'
)
#: JSON values of any shape, to put where a payload expects an object, a list or a number
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@functools.cache
def valid_regions() -> list[dict]:
    from label_studio_sdk.converter.brush import mask2rle

    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:6] = 255
    size = {"original_width": 8, "original_height": 6}
    return [
        {"type": "brushlabels", **size, "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": ["cat"]}},
        {"type": "polygonlabels", **size, "value": {"points": [[10, 10], [90, 20], [50, 80]], "polygonlabels": ["a"]}},
        {
            "type": "rectanglelabels",
            **size,
            "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["dog"]},
        },
        {
            "type": "keypointlabels",
            **size,
            "value": {"x": 50, "y": 50, "keypointlabels": ["cat"]},
            "is_positive": False,
        },
    ]


def _decoded(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return data.decode("latin-1")  # not JSON: the reader gets a string


def _check_region(region) -> None:
    if region is None:
        return
    h, w = region.shape
    if region.mask is not None:
        assert region.mask.dtype == bool and region.mask.shape == (h, w)
    if region.box is not None:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
    if region.point is not None:
        assert 0 <= region.point[0] <= w and 0 <= region.point[1] <= h


@given(data=mutated(CONFIG.encode(), max_random=512))
def test_parse_config_of_any_text(data):
    from persam.labelstudio.config import parse_config

    with Sandbox():
        config = outcome(lambda: parse_config(data.decode("utf-8", errors="replace")))
        if config is not None:
            assert config.value and config.controls and all(c.name for c in config.controls)


@given(value=JSON)
def test_parse_config_of_any_json_value(value):
    from persam.labelstudio.config import parse_config

    with Sandbox():
        assert outcome(lambda: parse_config(value)) is None or isinstance(value, str)


@given(data=mutated_from([json.dumps(r).encode() for r in valid_regions()]))
def test_read_region_of_any_bytes(data):
    from persam.labelstudio.regions import read_region

    with Sandbox():
        _check_region(outcome(lambda: read_region(_decoded(data))))


@given(
    which=st.sampled_from(range(4)),
    key=st.sampled_from(["value", "original_width", "original_height", "type", "is_positive"]),
    inner=st.sampled_from(["rle", "points", "x", "y", "width", "height", "rotation", "format", "brushlabels"]),
    replacement=JSON,
)
def test_read_region_with_any_field_replaced(which, key, inner, replacement):
    from persam.labelstudio.regions import read_region

    region = json.loads(json.dumps(valid_regions()[which]))
    if key == "value" and isinstance(region["value"], dict):
        region["value"][inner] = replacement
    else:
        region[key] = replacement
    with Sandbox():
        _check_region(outcome(lambda: read_region(region)))


@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 64),
)
def test_brush_rle_with_any_bytes_changed(edits, cut):
    from persam.labelstudio.regions import decode_brush

    rle = list(valid_regions()[0]["value"]["rle"])
    for where, value in edits:
        rle[where % len(rle)] = value
    rle = rle[: len(rle) - cut % len(rle)]
    with Sandbox():
        mask = outcome(lambda: decode_brush(rle, (6, 8)))
        if mask is not None:
            assert mask.dtype == bool and mask.shape == (6, 8)


@given(bits=st.lists(st.booleans(), min_size=1, max_size=15 * 11), w=st.integers(1, 15))
def test_a_brush_region_reads_back_as_its_mask(bits, w):
    from persam.labelstudio.config import parse_config
    from persam.labelstudio.regions import mask_results, read_region

    h = max(1, len(bits) // w)
    mask = np.array((bits * (h * w))[: h * w], dtype=bool).reshape(h, w)
    config = parse_config(CONFIG)
    regions = mask_results(mask, "cat", 0.5, config.output(), config)
    assert len(regions) == (1 if mask.any() else 0)
    if regions:
        assert np.array_equal(read_region(json.loads(json.dumps(regions[0]))).mask, mask)


class _NoPhotos:
    """A workspace that fetches nothing (a fuzzed body never reaches the model)."""

    model = None

    def photos(self, client, project, tasks, config):
        from persam.errors import InputError

        raise InputError("no photos in the fuzz test")


@functools.cache
def valid_bodies() -> list[bytes]:
    task = {"id": 3, "project": 1, "data": {"image": "/data/upload/1/a.jpg"}}
    click = valid_regions()[3]
    return [
        json.dumps(b).encode()
        for b in (
            {"tasks": [task], "project": "1.1712", "label_config": CONFIG},
            {"tasks": [task], "project": "1.1712", "label_config": CONFIG, "params": {"context": {"result": [click]}}},
            {"project": "1.1712", "schema": CONFIG, "hostname": "http://127.0.0.1:1", "access_token": "x"},
            {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"result": [click]}},
        )
    ]


@given(data=mutated_from(valid_bodies()), route=st.sampled_from(["setup", "predict", "webhook"]))
def test_backend_bodies_of_any_bytes(data, route):
    from persam.labelstudio.backend import Backend
    from persam.labelstudio.project import ConceptStore

    with Sandbox() as work:
        backend = Backend(_NoPhotos(), ConceptStore(work / "concepts"))
        answer = outcome(lambda: getattr(backend, route)(_decoded(data)))
        if answer is not None:
            assert isinstance(answer, dict)
            if route == "predict":
                assert isinstance(answer["results"], list)
