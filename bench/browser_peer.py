"""Debian's chromium, headless, driven by Playwright: the launch the browser tests
and ``python -m bench browser`` share.

Never a downloaded browser (``playwright install`` cannot run here): the system's
``/usr/bin/chromium``, with the flags ../shared/notes/browser.md found necessary
as root on this kind of machine, and a persistent profile so the page's
origin-private file system is on disk, not in RAM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

Page = Any  # playwright.sync_api.Page; playwright is imported only where a browser runs

TRANSFER_TIMEOUT_MS: Final = 150_000  # 64 MiB on a busy 2-core machine, generously
JOIN_TIMEOUT_MS: Final = 30_000

CHROMIUM: Final = Path("/usr/bin/chromium")
# Host addresses instead of mDNS names (aioice cannot resolve .local and would
# wait 1 s for each), and loopback allowed so two pages can connect to each other.
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
)


def launch(playwright: Any, profile: Path, downloads: Path | None = None) -> Any:
    """A fresh persistent chromium context in ``profile`` (a new directory)."""
    options: dict[str, Any] = {"accept_downloads": True}
    if downloads is not None:
        options["downloads_path"] = str(downloads)
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=list(CHROMIUM_ARGS),
        headless=True,
        viewport={"width": 1100, "height": 800},
        **options,
    )


# -- the page (its contract: DOM ids, window.xfer, query options) -----------------


def http_origin(signal_url: str) -> str:
    return signal_url.replace("ws://", "http://", 1).removesuffix("/ws")


def receive_url(origin: str, code: str, **options: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in {"sink": "download", "yes": "1", **options}.items())
    return f"{origin}/?{query}#{code}"


def xfer(page: Page) -> dict[str, Any]:
    """The page's status object, without its promise."""
    state: dict[str, Any] = page.evaluate(
        "() => { const { finished, ...rest } = window.xfer; return JSON.parse(JSON.stringify(rest)); }"
    )
    return state


def finished(page: Page, timeout_ms: int = TRANSFER_TIMEOUT_MS) -> dict[str, Any]:
    """What ``window.xfer.finished`` resolves with (the page's terminal summary).
    A page that never ends raises with the state it was stuck in."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_function("() => window.xfer && window.xfer.outcome !== null", timeout=timeout_ms)
    except PlaywrightTimeoutError as exc:
        raise AssertionError(f"the page did not end in {timeout_ms} ms: {xfer(page)}") from exc
    summary: dict[str, Any] = page.evaluate("() => window.xfer.finished")
    return summary


def wait_for_bytes(page: Page, at_least: int, timeout_ms: int = TRANSFER_TIMEOUT_MS) -> None:
    page.wait_for_function(
        f"() => window.xfer && window.xfer.bytes >= {at_least}", timeout=timeout_ms, polling=50
    )


def pick(page: Page, origin: str, path: Path, query: str = "") -> str:
    """Open the send page (with ``query``, e.g. ``ice_timeout=2``), pick ``path`` (a
    directory, or one file), return the room code the page shows once it has joined."""
    page.goto(f"{origin}/?{query}" if query else f"{origin}/")
    page.set_input_files("#dir" if path.is_dir() else "#files", str(path))
    page.wait_for_function(
        "() => document.querySelector('#send-code')?.textContent.trim()", timeout=JOIN_TIMEOUT_MS
    )
    page.wait_for_function("() => window.xfer && window.xfer.code", timeout=JOIN_TIMEOUT_MS)
    return str(page.evaluate("() => window.xfer.code"))
