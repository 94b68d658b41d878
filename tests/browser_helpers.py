"""Real headless Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright
(never `playwright install`: nothing may download a browser). Where it is missing the page
tests skip, unless QATUNE_REQUIRE_BROWSER=1 (set by .ci/run) makes that a failure."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def require_browser(chromium: Path = CHROMIUM) -> None:
    missing = None
    if not chromium.exists():
        missing = f"{chromium} is not here (Debian's chromium package)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is None:
        return
    required = os.environ.get("QATUNE_REQUIRE_BROWSER", "")
    if required not in ("", "0"):
        pytest.fail(
            f"{missing} and QATUNE_REQUIRE_BROWSER={required} says the page tests must run: install "
            "it (apt-get install chromium; never `playwright install`), or unset "
            "QATUNE_REQUIRE_BROWSER to skip them"
        )
    pytest.skip(missing)


@contextlib.contextmanager
def chromium_browser():
    """A headless Chromium, closed afterwards (skips or fails first where there is none)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()
