"""Debian's Chromium, headless, driven by Playwright's driver (nothing downloaded at run time): the
web page's tests and ``make bench-web`` open the page in a real browser with it."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root in a container, and on a machine whose network is closed: no sandbox, no GPU, no
# background requests (each would be refused, many at a time), a profile of its own per launch
CHROMIUM_ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL = "apt install chromium, and pip install playwright (make venv installs it)"


def browser_missing() -> str:
    """Why no browser test can run here ("" when one can)."""
    if not Path(CHROMIUM).is_file():
        return f"Debian's Chromium is not installed ({CHROMIUM}): {INSTALL}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"Playwright is not installed: {INSTALL}"
    return ""


@contextlib.contextmanager
def chromium():
    """A headless Chromium browser (Playwright's ``Browser``); skips the test when there is none."""
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
