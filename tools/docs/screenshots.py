"""Screenshots of the built docs site with headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright).

Builds the site into a temporary folder, serves it on 127.0.0.1 and writes
``docs/images/docs-home.png`` (the home page), ``docs/images/docs-guide.png``
(a guide) and ``docs/images/docs-api-load.png`` (the API reference of
``persam.load``). Usage: ``python tools/docs/screenshots.py``.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
PAGES = (
    ("docs-home.png", "", None),
    ("docs-guide.png", "guides/mark-the-object/", None),
    ("docs-api-load.png", "reference/api/", "persam.load"),
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="persam-site-") as site:
        # not --strict: the pictures this script makes are themselves links of the site
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-d", site], cwd=ROOT, check=True)
        handler = functools.partial(_QuietHandler, directory=site)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        OUT.mkdir(parents=True, exist_ok=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for name, path, anchor in PAGES:
                    page.goto(base + path, wait_until="networkidle")
                    if anchor:
                        page.locator(f"[id='{anchor}']").first.scroll_into_view_if_needed()
                        page.evaluate("window.scrollBy(0, -80)")
                    page.screenshot(path=str(OUT / name))
                    print(f"wrote {OUT.relative_to(ROOT) / name}")
                browser.close()
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
