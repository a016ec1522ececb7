"""A screenshot of Label Studio's editor showing a task's predictions, with headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright).

Logs in to a running Label Studio, opens the task in the project's editor and writes the page as a PNG
(default ``docs/images/label-studio-editor.png``). The guide ``docs/guides/label-studio.md`` says how
its picture was made. Usage::

    python tools/docs/label_studio_screenshot.py --url http://127.0.0.1:8080 --username EMAIL \
        --password PW --project 1 --task 2 [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--task", type=int, required=True)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "label-studio-editor.png")
    p.add_argument("--wait", type=float, default=8.0, help="seconds for the editor to draw the regions")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    url = args.url.rstrip("/")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/user/login/", wait_until="networkidle")
            page.fill("input[name=email]", args.username)
            page.fill("input[name=password]", args.password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{url}/projects/{args.project}/data?task={args.task}", wait_until="networkidle")
            page.wait_for_timeout(args.wait * 1000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
        finally:
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
