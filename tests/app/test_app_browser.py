"""`persam app` in a real browser: headless Chromium (Debian's package) driven by Playwright.

Uploads a reference, clicks the object, sees the mask, learns the concept
(PerSAM's similarity prior, then the part-aware one chosen on the page),
segments two targets, downloads the zip and checks its masks against the
session API on the same weights. Saves a screenshot (to the test's tmp
folder, and to ``$PERSAM_APP_SCREENSHOT`` when set: the Personalize tab
there, the Segment tab beside it as ``<name>-segment.png``).

With ``CI=true`` a missing browser or Playwright is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import IN_CI
from served import serve

CHROMIUM = Path(os.environ.get("PERSAM_CHROMIUM", "/usr/bin/chromium"))
CLICK_XY = (216, 162)  # photo pixels, on the red blob of the reference


def _missing(what: str) -> None:
    message = f"{what}; install it (apt-get install -y chromium; pip install 'persam[app]')"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def server(tmp_path, tiny_checkpoint):
    with serve(tmp_path / "server", tiny_checkpoint) as served:
        yield served.url


def _click_pixel(page, selector: str, x: int, y: int) -> None:
    """Click photo pixel (x, y) of the image shown in ``selector`` (scaled as displayed)."""
    img = page.locator(f"{selector} img").first
    img.wait_for(state="visible")
    natural = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    box = img.bounding_box()
    img.click(position={"x": (x + 0.5) * box["width"] / natural[0], "y": (y + 0.5) * box["height"] / natural[1]})


def _wait_text(page, selector: str, needle: str, timeout_ms: int = 30000) -> str:
    box = page.locator(f"{selector} textarea").first
    end = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < end:
        value = box.input_value()
        if needle in value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{selector}: {needle!r} never appeared (last: {box.input_value()!r})")


def _screenshot(page, path: Path, suffix: str) -> None:
    """Save a screenshot to ``path`` and, when ``$PERSAM_APP_SCREENSHOT`` is set, beside that path too."""
    page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get("PERSAM_APP_SCREENSHOT")
    if wanted:
        target = Path(wanted)
        page.screenshot(path=str(target.with_name(target.stem + suffix + target.suffix)), full_page=True)


def test_app_in_a_browser(server, tmp_path, tiny_checkpoint):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is missing")
    if not CHROMIUM.is_file():
        _missing(f"no Chromium at {CHROMIUM}")
    import persam

    ref, _ = synthetic_photo(360, 480, seed=5)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    targets = []
    for i, name in enumerate(["first.png", "second.jpg"]):
        Image.fromarray(synthetic_photo(seed=30 + i, center=(0.5, 0.4 + 0.1 * i))[0]).save(tmp_path / name)
        targets.append(tmp_path / name)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(30000)
            page.goto(server)
            page.locator("#ref-photo input[type=file]").set_input_files(str(tmp_path / "ref.png"))
            _wait_text(page, "#status", "480x360")
            _click_pixel(page, "#ref-view", *CLICK_XY)
            status = _wait_text(page, "#status", "mask:")
            assert int(status.split("mask: ")[1].split(" pixels")[0]) > 0
            page.locator("#learn").click()
            _wait_text(page, "#status", "concept ready")
            assert "part-aware" not in _wait_text(page, "#status", "concept ready")
            assert not page.locator("#parts-max").is_visible()  # the part range shows with the part-aware prior only
            page.locator("#prior label").filter(has_text="Part-aware").click()
            page.locator("#parts-max").wait_for(state="visible")
            page.locator("#learn").click()
            _wait_text(page, "#status", "part-aware prior, parts 1..5")
            _screenshot(page, tmp_path / "personalize.png", "")

            page.get_by_role("tab", name="Segment").click()
            page.locator("#targets input[type=file]").set_input_files([str(t) for t in targets])
            for target in targets:  # both uploads done: each has its download link
                page.locator(f'#targets a[download="{target.name}"]').first.wait_for()
            page.locator("#segment").click()
            _wait_text(page, "#segment-status", "segmented", timeout_ms=40000)
            page.locator("#results img").first.wait_for(state="visible")
            _screenshot(page, tmp_path / "segment.png", "-segment")
            with page.expect_download() as download:
                page.locator("#zip a").first.click()
            zip_path = tmp_path / "results.zip"
            download.value.save_as(zip_path)
        finally:
            browser.close()

    assert (tmp_path / "personalize.png").stat().st_size > 0 and (tmp_path / "segment.png").stat().st_size > 0
    model = persam.load("sam_tiny", tiny_checkpoint, device="cpu")
    concept = model.personalize(ref, points=[CLICK_XY], prior="part-aware")
    with zipfile.ZipFile(zip_path) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert [e["input"] for e in manifest["inputs"]] == ["first.png", "second.jpg"]
        assert all(
            e["parts"][0]["chosen"] in range(1, 6) for e in manifest["inputs"]
        )  # the page's prior reached the run
        for target in targets:
            with z.open(f"{target.stem}.png") as f:
                got = np.asarray(Image.open(f)) > 0
            expect = concept.segment(np.asarray(Image.open(target).convert("RGB"))).mask
            np.testing.assert_array_equal(got, expect)
