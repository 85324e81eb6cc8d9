"""browser: the web app as a peer — CLI→browser, browser→CLI, browser→browser.

One file through each pair on this machine: Debian's chromium headless
(bench/browser_peer.py), the real CLIs, a standalone ``pipeline-signal``
serving the page.  The page receives into its origin-private file system
(``?sink=opfs``), hashing as it goes, like a user's tab would.

Rate: bytes over the page's data phase, from ``window.xfer.state`` turning
``transferring`` to its terminal outcome (polled every 20 ms), and for the
CLI side also the CLI's own summary (over its transfer).  Baseline: the raw
aiortc ceiling at the same size and message size, measured right before and
after each pair (A B A B A B A), so drift in the machine's load hits both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.browser_peer import finished, http_origin, launch, pick, receive_url
from bench.context import Bench, log
from bench.report import fmt_rate, fmt_ratio, fmt_size, fmt_spread, median, ratio
from tests.cli_harness import Launcher, free_port, new_code, receiver_args, sender_args

SIZE = 128 << 20
QUICK_SIZE = 64 << 20
DIRECTIONS = ("cli_to_browser", "browser_to_cli", "browser_to_browser")
TIMEOUT_MS = 600_000


def _data_phase(page: Any) -> tuple[float, dict[str, Any]]:
    """Seconds from ``transferring`` to the outcome, and the page's summary."""
    page.wait_for_function("() => window.xfer && window.xfer.state === 'transferring'", timeout=TIMEOUT_MS, polling=20)
    started = time.monotonic()
    page.wait_for_function("() => window.xfer.outcome !== null", timeout=TIMEOUT_MS, polling=20)
    elapsed = time.monotonic() - started
    return elapsed, finished(page)


def _cli_to_browser(context: Any, launcher: Launcher, url: str, path: Path, out: Path) -> dict[str, Any]:
    code = new_code()
    sender = launcher.start("sender", "pipeline.cli.send", sender_args([path], code, "--signal", url))
    sender.wait_for_output(r"joined the room", 60)
    page = context.new_page()
    page.goto(receive_url(http_origin(url), code, sink="opfs"))
    seconds, summary = _data_phase(page)
    done = sender.wait(TIMEOUT_MS / 1000)
    page.close()
    return {"page_s": seconds, "page": summary, "cli": done.summary, "cli_exit": done.returncode}


def _browser_to_cli(context: Any, launcher: Launcher, url: str, path: Path, out: Path) -> dict[str, Any]:
    page = context.new_page()
    code = pick(page, http_origin(url), path)
    receiver = launcher.start("receiver", "pipeline.cli.receive", receiver_args(code, url, out, "--yes"))
    seconds, summary = _data_phase(page)
    done = receiver.wait(TIMEOUT_MS / 1000)
    page.close()
    return {"page_s": seconds, "page": summary, "cli": done.summary, "cli_exit": done.returncode}


def _browser_to_browser(context: Any, launcher: Launcher, url: str, path: Path, out: Path) -> dict[str, Any]:
    sending = context.new_page()
    code = pick(sending, http_origin(url), path)
    receiving = context.new_page()
    receiving.goto(receive_url(http_origin(url), code, sink="opfs"))
    seconds, summary = _data_phase(receiving)
    sent = finished(sending)
    for page in (sending, receiving):
        page.close()
    return {"page_s": seconds, "page": summary, "sender_page": sent, "cli": None, "cli_exit": None}


PAIRS: dict[str, Callable[[Any, Launcher, str, Path, Path], dict[str, Any]]] = {
    "cli_to_browser": _cli_to_browser,
    "browser_to_cli": _browser_to_cli,
    "browser_to_browser": _browser_to_browser,
}


def run(bench: Bench) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright  # only this scenario needs it

    size = QUICK_SIZE if bench.settings.quick else SIZE
    runs: dict[str, dict[str, Any]] = {}
    ceilings = [bench.measure_ceiling("before browser", size=size).as_dict()]
    logs = bench.out_dir / "runs" / "browser"
    logs.mkdir(parents=True, exist_ok=True)
    with bench.one_file(size) as path, Launcher(logs) as launcher, sync_playwright() as playwright:
        signal = launcher.start("signal", "pipeline.cli.signal_server", ["--port", str(free_port())], json_out=False)
        url = signal.wait_for_output(r"listening on (ws://\S+)", 30, stream="stdout").group(1)
        context = launch(playwright, bench.scratch / "chromium-profile", bench.scratch / "downloads")
        try:
            for direction in DIRECTIONS:
                log(f"browser {direction.replace('_', ' ')}: one {fmt_size(size)} file")
                out = bench.scratch / f"out-{direction}"
                run = PAIRS[direction](context, launcher, url, path, out)
                ok = run["page"].get("outcome") == "completed" and run["cli_exit"] in (0, None)
                run.update(ok=ok, bytes_per_s=size / run["page_s"] if ok and run["page_s"] > 0 else None)
                runs[direction] = run
                log(f"  -> {fmt_rate(run['bytes_per_s'])} ({run['page'].get('outcome')})")
                ceilings.append(bench.measure_ceiling(f"after browser {direction}", size=size).as_dict())
        finally:
            context.close()
    base = median(c["bytes_per_s"] for c in ceilings)
    rows = []
    for direction, run in runs.items():
        cli = run.get("cli") or {}
        rows.append(
            [
                direction.replace("_to_", " → ").replace("cli", "CLI"),
                fmt_rate(run["bytes_per_s"]),
                fmt_rate(cli.get("throughput_bytes_per_s")) if cli else "",
                fmt_spread([c["bytes_per_s"] for c in ceilings]),
                fmt_ratio(ratio(run["bytes_per_s"], base)),
            ]
        )
    return {
        "title": "Browser peer: one file through each pair with the web app",
        "baseline": "raw aiortc DataChannel, same size and messages, before and after each pair (open → last byte)",
        "params": {"bytes": size, "sink": "opfs"},
        "runs": runs,
        "ceiling_runs": ceilings,
        "result": {direction: {"bytes_per_s": run["bytes_per_s"], "ratio": ratio(run["bytes_per_s"], base)} for direction, run in runs.items()},
        "table": {
            "columns": ["pair", "page data phase", "CLI's own rate", "raw aiortc (same run)", "vs raw"],
            "rows": rows,
        },
    }
