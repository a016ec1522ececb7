"""The page's wiring, without a browser: user errors become page messages; the page has its parts."""

from __future__ import annotations

import pytest

from extras import require

gr = require("gradio")

from persam.app.ui import build, guarded  # noqa: E402
from persam.cli.main import main  # noqa: E402
from persam.errors import InputError  # noqa: E402


def test_user_errors_become_page_messages_other_errors_stay_errors():
    @guarded
    def bad_input():
        raise InputError("photo.jpg: not a readable image;\nconvert it to JPEG or PNG")

    with pytest.raises(gr.Error) as info:
        bad_input()
    assert info.value.message == "photo.jpg: not a readable image; convert it to JPEG or PNG"

    @guarded
    def plain_value_error():  # a built-in ValueError is a bug, not bad input
        raise ValueError("an internal invariant")

    with pytest.raises(ValueError):
        plain_value_error()

    @guarded
    def bug():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        bug()


def test_page_has_three_tabs_and_no_analytics(tiny_model, tmp_path):
    demo = build(tiny_model, tmp_path)
    config = demo.get_config_file()
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert {"Personalize", "Segment", "Video"} <= labels
    types = {c["type"] for c in config["components"]}
    assert {"image", "gallery", "file", "video"} <= types
    assert demo.analytics_enabled is False


@pytest.mark.parametrize("argv, message", [(["--port", "0"], "--port"), (["--queue-size", "0"], "--queue-size")])
def test_app_options_are_checked(capsys, argv, message):
    assert main(["app", *argv, "--model", "sam_tiny", "--random-weights"]) == 2
    assert message in capsys.readouterr().err
