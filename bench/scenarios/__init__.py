"""The bench's scenarios, by name. Each module has ``run(bench) -> dict`` (JSON-ready:
parameters, runs, key results, and a ``table`` of formatted rows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import Bench
from bench.scenarios import (
    browser,
    ceiling,
    impairment,
    large_file,
    media,
    memory,
    profile,
    reconnect,
    signaling,
    soak,
    sweep,
)

Scenario = Callable[[Bench], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "ceiling": ceiling.run,
    "large-file": large_file.run,
    "memory": memory.run,
    "media": media.run,
    "sweep": sweep.run,
    "profile": profile.run,
    "impairment": impairment.run,
    "reconnect": reconnect.run,
    "browser": browser.run,
    "soak": soak.run,
    "signaling": signaling.run,
}
# What `python -m bench` runs without names; profile (py-spy), impairment and reconnect (root:
# network namespaces, iptables, tc), browser (chromium) and soak (root: tmpfs for
# the full disk; ~10 min) and signaling (~1 min) are asked for by name.
DEFAULT_SCENARIOS: tuple[str, ...] = ("ceiling", "large-file", "memory", "media", "sweep")

DESCRIPTIONS: dict[str, str] = {
    "ceiling": "raw aiortc DataChannel between two processes (baseline: TCP loopback)",
    "large-file": "one large file through pipeline-send/receive (baseline: ceiling)",
    "memory": "peak ΣPSS per side as the file grows (baseline: smallest size)",
    "media": "many 64 KiB files vs one file of the same total (baseline: one file)",
    "sweep": "chunk size × window × ring slots × bufferedAmount thresholds (baseline: defaults)",
    "profile": "py-spy on both connection processes during a transfer (where the CPU goes)",
    "impairment": "two NATs, 40 ms RTT / 1 % / 5 % loss / 8 Mbit/s (root; baseline: raw aiortc, same condition)",
    "reconnect": "a link cut for 3 s (and 15 s) mid-transfer in the NAT lab: time back to full rate (root; baseline: the same transfer uncut)",
    "soak": "200+ sessions, normal and every fault, through one signaling server (baseline: Appendix A's verdicts)",
    "signaling": "200 rooms at once, then signal/oversize/garbage/guessing/idle/slow-reader floods (baseline: a witness room on the quiet server)",
    "browser": "CLI→browser, browser→CLI, browser→browser with the web app in chromium (baseline: raw aiortc, same size)",
}
