"""`persam app` serving several people at once, in headless Chromium (Debian's package, driven by Playwright).

Three users in three browser contexts, at the same time: each uploads their own reference, clicks their own
object, learns their own concept, then (all three concepts learned before anyone segments) segments their own
photos and downloads their own zip. Every zip must hold exactly the files ``persam segment --ref REF
--ref-point X,Y --overlay --format coco`` writes for that user, its masks and overlays pixel-equal (the same
weights, photos and code path on one machine: no tolerance is needed). The same server refuses, with a message
in the page, an upload over its ``--max-file-size`` and a zip climbing out of its folder (and writes nothing
outside its own folders).

With ``CI=true`` a missing browser or Playwright is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from extras import IN_CI
from served import serve

CHROMIUM = Path(os.environ.get("PERSAM_CHROMIUM", "/usr/bin/chromium"))
LIMIT = "1mb"  # the server's --max-file-size here
TIMEOUT_MS = 90_000  # one step of one user (three users share two CPUs)


def _browser_or_skip():
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    missing = "the playwright package is missing" if async_playwright is None else None
    if missing is None and not CHROMIUM.is_file():
        missing = f"no Chromium at {CHROMIUM}"
    if missing is not None:
        message = f"{missing}; install it (apt-get install -y chromium; pip install 'persam[app]')"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    return async_playwright


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint):
    with serve(tmp_path_factory.mktemp("service"), tiny_checkpoint, "--max-file-size", LIMIT) as served:
        yield served


@dataclass(frozen=True)
class User:
    """One visitor: a reference photo, the pixel clicked on it, photos to segment (same names for everyone)."""

    folder: Path
    click: tuple[int, int]
    targets: tuple[Path, ...]

    @property
    def ref(self) -> Path:
        return self.folder / "ref.png"


def make_user(folder: Path, k: int) -> User:
    folder.mkdir(parents=True)
    colour = [(220, 30, 40), (30, 160, 60), (40, 60, 220)][k]
    center = [(0.5, 0.45), (0.4, 0.6), (0.6, 0.35)][k]
    ref, _ = synthetic_photo(seed=5 + k, center=center, colour=colour)
    Image.fromarray(ref).save(folder / "ref.png")
    targets = []
    for i, name in enumerate(["a.png", "b.jpg"]):
        photo, _ = synthetic_photo(seed=40 + 2 * k + i, center=(0.45 + 0.1 * i, 0.5 - 0.1 * k), colour=colour)
        Image.fromarray(photo).save(folder / name)
        targets.append(folder / name)
    h, w = ref.shape[:2]
    return User(folder, (int(center[1] * w), int(center[0] * h)), tuple(targets))


async def wait_text(page, selector: str, needle: str, timeout_ms: int = TIMEOUT_MS) -> str:
    box = page.locator(f"{selector} textarea").first
    end = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < end:
        value = await box.input_value()
        if needle in value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"{selector}: {needle!r} never appeared (last: {await box.input_value()!r})")


async def click_pixel(page, selector: str, x: int, y: int) -> None:
    """Click photo pixel (x, y) of the image shown in ``selector`` (scaled as displayed)."""
    img = page.locator(f"{selector} img").first
    await img.wait_for(state="visible")
    natural = await img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    box = await img.bounding_box()
    position = {"x": (x + 0.5) * box["width"] / natural[0], "y": (y + 0.5) * box["height"] / natural[1]}
    await img.click(position=position)


async def new_page(browser, url: str):
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(url)
    return context, page


async def learn(page, user: User) -> None:
    """Upload the user's reference, click their object, learn the concept (PerSAM, similarity prior)."""
    await page.locator("#ref-photo input[type=file]").set_input_files(str(user.ref))
    await wait_text(page, "#status", "ref.png: 240x180")
    await click_pixel(page, "#ref-view", *user.click)
    await wait_text(page, "#status", "mask:")
    await page.locator("#learn").click()
    await wait_text(page, "#status", "concept ready")


async def upload_targets(page, paths: list[Path]) -> None:
    await page.get_by_role("tab", name="Segment").click()
    await page.locator("#targets input[type=file]").set_input_files([str(p) for p in paths])
    for path in paths:  # every upload done: each has its download link
        await page.locator(f'#targets a[download="{path.name}"]').first.wait_for()


async def one_user(browser, url: str, user: User, learned: asyncio.Barrier) -> Path:
    """The user's whole visit; returns their downloaded zip."""
    context, page = await new_page(browser, url)
    try:
        await learn(page, user)
        await learned.wait()  # three concepts live in the server at once before anyone segments
        await upload_targets(page, list(user.targets))
        await page.locator("#segment").click()
        await wait_text(page, "#segment-status", "2 photo(s) segmented")
        async with page.expect_download() as download:
            await page.locator("#zip a").first.click()
        zip_path = user.folder / "from-the-app.zip"
        await (await download.value).save_as(zip_path)
        return zip_path
    finally:
        await context.close()


def persam_segment(user: User, checkpoint: Path) -> Path:
    """What ``persam segment`` writes for this user's reference and photos (run in this process)."""
    from persam.cli.main import main

    out = user.folder / "cli"
    argv = ["segment", "--model", "sam_tiny", "--checkpoint", str(checkpoint), "--device", "cpu"]
    argv += ["--ref", str(user.ref), "--ref-point", "{},{}".format(*user.click)]
    argv += [*map(str, user.targets), "-o", str(out), "--overlay", "--format", "coco", "-q"]
    assert main(argv) == 0
    return out


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_three_users_at_once_each_get_their_own_masks(app, tmp_path, tiny_checkpoint):
    async_playwright = _browser_or_skip()
    import persam
    from persam.io.lock import LOCK_NAME

    users = [make_user(tmp_path / f"user{k}", k) for k in range(3)]

    async def visit() -> list[Path]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
            try:
                learned = asyncio.Barrier(len(users))
                return await asyncio.wait_for(
                    asyncio.gather(*(one_user(browser, app.url, u, learned) for u in users)), timeout=600
                )
            finally:
                await browser.close()

    zips = asyncio.run(visit())

    model = persam.load("sam_tiny", tiny_checkpoint, device="cpu")
    concepts = [model.personalize(np.asarray(Image.open(u.ref)), points=[u.click]) for u in users]
    for k, (user, zip_path) in enumerate(zip(users, zips)):
        cli = persam_segment(user, tiny_checkpoint)
        expected = {p.relative_to(cli).as_posix() for p in cli.rglob("*") if p.is_file() and p.name != LOCK_NAME}
        with zipfile.ZipFile(zip_path) as z:
            assert set(z.namelist()) == expected
            manifest = json.loads(z.read("manifest.json"))
            assert [e["input"] for e in manifest["inputs"]] == ["a.png", "b.jpg"]
            for name in sorted(expected - {"manifest.json", "annotations.json"}):  # masks and overlays
                np.testing.assert_array_equal(pixels(z.read(name)), pixels((cli / name).read_bytes()), err_msg=name)
            for target in user.targets:  # another user's concept would have given other masks
                mine = pixels(z.read(f"{target.stem}.png")) > 0
                photo = np.asarray(Image.open(target).convert("RGB"))
                assert mine.any()
                for j, concept in enumerate(concepts):
                    assert np.array_equal(concept.segment(photo).mask, mine) == (j == k), (k, j, target.name)


def test_a_file_over_the_limit_and_a_zip_escape_are_refused_in_the_page(app, tmp_path):
    async_playwright = _browser_or_skip()
    import httpx

    user = make_user(tmp_path / "user", 0)
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(1024**2 + 1))  # one byte over --max-file-size 1mb
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.write(user.targets[0], "a.png")
        z.write(user.targets[1], "../../../../page-escape.jpg")  # from the unzip folder up to the server's root

    async def visit() -> tuple[str, str]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
            try:
                context, page = await new_page(browser, app.url)
                await learn(page, user)
                await page.get_by_role("tab", name="Segment").click()
                await page.locator("#targets input[type=file]").set_input_files(str(big))
                too_big = page.locator(".toast-body").filter(has_text="big.jpg")
                size_message = await too_big.first.inner_text()
                await upload_targets(page, [evil])
                await page.locator("#segment").click()
                escape = page.locator(".toast-body").filter(has_text="evil.zip")
                zip_message = await escape.first.inner_text()
                await context.close()
                return size_message, zip_message
            finally:
                await browser.close()

    size_message, zip_message = asyncio.run(asyncio.wait_for(visit(), timeout=300))
    assert 'File(s) exceed the maximum allowed size of 1.0 Mb: "big.jpg"' in size_message
    assert "evil.zip: member '../../../../page-escape.jpg' points outside the zip; re-create the zip" in zip_message
    assert not [p for p in app.root.parent.rglob("*page-escape*")]  # not written anywhere around the server
    unzipped = [p for p in app.root.rglob("*") if "unzipped-" in p.as_posix()]
    assert unzipped == []  # nor the good member: the zip is checked whole before anything is unpacked
    # the page's check is the browser's; the server refuses too (a client that skips the page's check)
    one_mib = 1024**2
    url = app.url + "/gradio_api/upload"
    refused = httpx.post(url, files={"files": ("big.jpg", b"\0" * (one_mib + 1))}, timeout=60)
    assert (refused.status_code, refused.text) == (413, f"File size exceeded maximum allowed size of {one_mib} bytes.")
    taken = httpx.post(url, files={"files": ("fits.jpg", b"\0" * one_mib)}, timeout=60)
    assert taken.status_code == 200 and Path(taken.json()[0]).read_bytes() == b"\0" * one_mib
