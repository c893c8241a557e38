"""Open a local HTML page in headless Chromium (Debian's /usr/bin/chromium) through Playwright.

Playwright's own browser download is never used (no network): we point it at the system
Chromium, started with the flags that keep it from reaching for the network.
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")


def open_page(url: str, screenshot: str | None = None):
    """Load `url`, wait for the load event, return (page facts dict). Optionally save a screenshot."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="load")
            facts = page.evaluate(
                """() => ({
                    images: Array.from(document.images).map(i => ({src: i.getAttribute('src'),
                        complete: i.complete, width: i.naturalWidth})),
                    text: document.body.innerText,
                    title: document.title,
                })"""
            )
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
            return facts
        finally:
            browser.close()
