"""Numbers to text: medians, ratios and the tables the bench prints and README shows.

Rates are decimal (MB/s = 10^6 bytes/s, as network tools show them), memory binary
(MiB), CPU as seconds per GB of payload (numerically the same as ms per MB).
Everything here is pure and tested in tests/unit/test_bench_smoke.py.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

MISSING = "–"


def median(values: Iterable[float | int | None]) -> float | None:
    """Median of the values that are present; None if none is."""
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(present) if present else None


def ratio(subject: float | int | None, baseline: float | int | None) -> float | None:
    """subject / baseline, or None when either is missing or the baseline is 0."""
    if subject is None or baseline is None or baseline == 0:
        return None
    return float(subject) / float(baseline)


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}×"


def fmt_rate(bytes_per_s: float | None) -> str:
    """MB/s with one decimal (three significant digits above 100)."""
    if bytes_per_s is None:
        return MISSING
    mb = bytes_per_s / 1e6
    return f"{mb:.0f} MB/s" if mb >= 100 else f"{mb:.1f} MB/s"


def fmt_mib(n: float | int | None) -> str:
    return MISSING if n is None else f"{n / 2**20:.0f} MiB"


def fmt_size(n: int) -> str:
    """Exact binary size for labels: 65536 -> '64 KiB', 2**30 -> '1 GiB', 262120 -> '255.98 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{n} B"


def fmt_seconds(s: float | None) -> str:
    return MISSING if s is None else f"{s:.1f} s"


def fmt_number(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_spread(values: Sequence[float | None], fmt: Any = fmt_rate) -> str:
    """'12.3 MB/s (11.9–12.8, n=3)': median, range and count of repetitions."""
    present = [v for v in values if v is not None]
    if not present:
        return MISSING
    mid = fmt(median(present))
    if len(present) == 1:
        return mid
    low, high = fmt(min(present)).split()[0], fmt(max(present)).split()[0]
    return f"{mid} ({low}–{high}, n={len(present)})"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed, '|' escaped, numbers right-aligned."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    body = [[cell(v) for v in row] for row in rows]
    for row in body:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells, table has {len(columns)} columns: {row}")
    numeric = [
        bool(body) and all(_looks_numeric(row[i]) for row in body if row[i] not in (MISSING, "")) for i in range(len(columns))
    ]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in body)
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("×%").replace(",", "").lstrip("+-")
    try:
        float(head)
    except ValueError:
        return False
    return True


def describe_machine_line(machine: dict[str, Any]) -> str:
    """One line: '2 cores, Intel Xeon, Python 3.11.7, aiortc 1.16.0, uvloop 0.23.0, load 0.4'."""
    parts = [
        f"{machine.get('cores')} cores",
        str(machine.get("cpu_model")),
        f"Python {machine.get('python')}",
        f"aiortc {machine.get('aiortc')}",
        f"uvloop {machine.get('uvloop')}",
    ]
    load, end = machine.get("loadavg_start"), machine.get("loadavg_end")
    if load:
        parts.append(f"load {load[0]:.2f} at start" + (f", {end[0]:.2f} at end" if end else ""))
    return ", ".join(parts)


def verdicts(results: dict[str, Any]) -> list[str]:
    """One line per target the issue sets, from a results.json dict."""
    scenarios = results.get("scenarios", {})
    lines: list[str] = []
    large = scenarios.get("large-file", {}).get("result")
    if large:
        r, target = large.get("ratio_steady"), large.get("target_ratio", 0.9)
        verdict = "reached" if r is not None and r >= target else "missed"
        if r is not None and r < target:
            verdict += f" by {(target - r) * 100:.0f} points"
        lines.append(
            f"Large file: {fmt_rate(large.get('steady_bytes_per_s'))} steady = {fmt_ratio(r)} of the ceiling "
            f"({fmt_rate(large.get('ceiling_steady_bytes_per_s'))}); target ≥{target:.1f}× {verdict}; "
            f"end to end {fmt_ratio(large.get('ratio_end_to_end'))}; "
            f"{large.get('stalls_mid_transfer', 0)} stalls after the first byte, "
            f"{large.get('retransmitted_frames', 0)} retransmitted frames."
        )
    memory = scenarios.get("memory", {}).get("result")
    if memory and "flat" in memory:
        lines.append(
            f"Memory: largest/smallest peak ΣPSS sender {fmt_ratio(memory.get('sender_largest_over_smallest'))}, "
            f"receiver {fmt_ratio(memory.get('receiver_largest_over_smallest'))}: "
            + ("flat" if memory["flat"] else f"NOT flat (limit {memory.get('flat_limit')}×)")
            + "."
        )
    media = scenarios.get("media", {}).get("result")
    if media:
        r, target = media.get("ratio_steady"), media.get("target_ratio", 0.7)
        verdict = "reached" if r is not None and r >= target else "missed"
        lines.append(
            f"Media directory: {fmt_number(media.get('files_per_s'))} files/s, directory/one file "
            f"{fmt_ratio(r)} steady, {fmt_ratio(media.get('ratio_end_to_end'))} end to end; target ≥{target:.1f}× {verdict}."
        )
    rise = scenarios.get("impairment", {}).get("result", {}).get("rtt_rise")
    if rise:
        after, ratios = rise["after_rise_bytes_per_s"], rise["ratio"]
        lines.append(
            "RTT rise 1 → 40 ms, second half (all after the rise) / 40 ms from the start: "
            + ", ".join(f"{side} {fmt_rate(after.get(side))} = {fmt_ratio(ratios.get(side))}" for side in after)
            + f"; a cap kept from connect time allows {fmt_rate(rise['connect_time_cap_bound_bytes_per_s'])}."
        )
    failed = results.get("failed_attempts") or []
    if failed:
        hung = [f for f in failed if f.get("hung")]
        lines.append(
            f"Failures: {len(failed)} of {results.get('transfers_started', '?')} transfers failed"
            + (f", {len(hung)} of them hung with no progress (run again; see failed_attempts)" if hung else "")
            + ": "
            + "; ".join(f"{f['label']}: {f['error']}" for f in failed[:3])
            + "."
        )
    for name, scenario in scenarios.items():
        if "error" in scenario:
            lines.append(f"{name}: FAILED: {scenario['error']}")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The run as markdown: machine, verdicts, then each scenario's table."""
    machine = results.get("machine", {})
    out = [
        f"Run {results.get('run_id')} ({'quick' if results.get('settings', {}).get('quick') else 'full'}), "
        f"{results.get('elapsed_s', 0):.0f} s, on {describe_machine_line(machine)}"
        + (f", commit {machine.get('git_commit')}" + (" (+ local changes)" if machine.get("git_dirty") else "") if machine.get("git_commit") else "")
        + ".",
        "",
    ]
    out.extend(f"- {line}" for line in verdicts(results))
    for scenario in results.get("scenarios", {}).values():
        table = scenario.get("table")
        if not table:
            continue
        out += ["", f"#### {scenario.get('title')}", "", f"Baseline: {scenario.get('baseline')}.", ""]
        out.append(markdown_table(table["columns"], table["rows"]))
    return "\n".join(out) + "\n"
