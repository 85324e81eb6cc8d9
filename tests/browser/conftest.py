"""Fixtures for the real-browser tests: Debian's chromium driven headless by Playwright.

``chromium``: a fresh persistent profile (its origin-private file system on disk,
not in RAM) of ``/usr/bin/chromium``, closed and its processes reaped when the
test ends.  Never a downloaded browser: without ``/usr/bin/chromium`` the test
fails (``./dev.sh`` installs it), it does not skip.

Each page gets a console log (``Browser.console(page)``) that failing assertions
print (and the fixture prints at teardown, so a failed test shows every page's), and ``Browser.screenshot`` keeps a PNG in the test's tmp dir and in
``tests/browser/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from bench.browser_peer import CHROMIUM, launch

# The real CLIs and a standalone pipeline-signal, as the CLI tests start them.
from tests.integration.conftest import launcher, signal_server

__all__ = ["Browser", "chromium", "launcher", "signal_server"]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass
class Browser:
    context: BrowserContext
    tmp: Path
    logs: dict[int, list[str]] = field(default_factory=dict)

    def new_page(self) -> Page:
        page = self.context.new_page()
        log = self.logs.setdefault(id(page), [])
        page.on("console", lambda msg: log.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: log.append(f"[pageerror] {exc}"))
        return page

    def console(self, page: Page) -> str:
        return "\n".join(self.logs.get(id(page), []))

    def screenshot(self, page: Page, name: str) -> Path:
        path = self.tmp / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(path, ARTIFACTS / path.name)
        return path

    def renderer_processes(self) -> list[psutil.Process]:
        """Chromium's renderer processes (the pages), children of this browser."""
        found = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if "--type=renderer" in proc.cmdline():
                    found.append(proc)
            except psutil.Error:
                continue
        return found


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run ./dev.sh setup (it installs Debian's chromium)")
    profile = tmp_path / "profile"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with sync_playwright() as playwright:
        context = launch(playwright, profile, downloads)
        browser = Browser(context, tmp_path)
        try:
            yield browser
        finally:
            # pytest shows a test's captured output only when it failed: there, every
            # page's console says what the page did, whatever the assertion printed.
            for number, log in enumerate(browser.logs.values()):
                print(f"--- console of page {number} ---", *log, sep="\n")
            context.close()
