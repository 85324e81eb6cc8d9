"""sweep: chunk size × window × ring slots × bufferedAmount thresholds.

Each point is a YAML ``--config`` given to both sides. ``ofat`` (the default)
varies one factor at a time around the defaults, ``grid`` runs the full product,
``quick`` a few telling points. Baseline: the defaults, run first, last (and in
the middle with three repetitions) of the same sweep; every point is reported as
a ratio to their median, and to raw aiortc of the same size run before and after. Memory is
in the table too: a setting that buys nothing in throughput but costs memory is
what the defaults avoid.
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.context import Bench, log
from bench.raw_channel import run_raw_channel
from bench.report import fmt_mib, fmt_rate, fmt_ratio, fmt_size, median, ratio
from bench.transfer import transfer_metrics
from pipeline.config import RING_MARGIN, Config

KiB, MiB = 1 << 10, 1 << 20
FACTORS = ("chunk_size", "window", "ring_slots", "buffered", "flight_cap")
MAX_CHUNK = 262144 - 24  # the largest DATA payload (262144-byte message limit minus the header)
RING_AHEAD = 64  # slots beyond the window when a point changes the window but not the ring


Point = tuple[str, str, dict[str, Any]]  # (dimension, label, dotted config)


def _window_point(window: int, defaults: Config) -> dict[str, Any]:
    ring = max(defaults.transfer.ring_slots, window + RING_AHEAD)
    return {"transfer.window": window, "transfer.ring_slots": ring}


def _buffered_label(high: int, low: int) -> str:
    return f"high {fmt_size(high)} / low {fmt_size(low)}"


def sweep_points(mode: str, defaults: Config) -> list[Point]:
    """The non-default points of a sweep, in run order."""
    w = defaults.transfer.window
    if mode == "quick":
        return [
            ("chunk_size", fmt_size(16 * KiB), {"transfer.chunk_size": 16 * KiB}),
            ("chunk_size", fmt_size(MAX_CHUNK), {"transfer.chunk_size": MAX_CHUNK}),
            ("window", "32", _window_point(32, defaults)),
            ("buffered", _buffered_label(4 * MiB, 1 * MiB), {"channel.buffered_high": 4 * MiB, "channel.buffered_low": 1 * MiB}),
            ("flight_cap", "off", {"channel.flight_cap": "off"}),
        ]
    if mode == "ofat":
        points: list[Point] = []
        for chunk in (16 * KiB, MAX_CHUNK):
            points.append(("chunk_size", fmt_size(chunk), {"transfer.chunk_size": chunk}))
        for window in (16, 32, 64, 256, 512):
            points.append(("window", str(window), _window_point(window, defaults)))
        for ring in (w + RING_MARGIN, 512):
            points.append(("ring_slots", str(ring), {"transfer.ring_slots": ring}))
        for high, low in ((256 * KiB, 64 * KiB), (4 * MiB, 1 * MiB), (16 * MiB, 4 * MiB)):
            points.append(
                ("buffered", _buffered_label(high, low), {"channel.buffered_high": high, "channel.buffered_low": low})
            )
        for cap in ("off", 1 * MiB, 4 * MiB):
            label = cap if isinstance(cap, str) else fmt_size(cap)
            points.append(("flight_cap", label, {"channel.flight_cap": cap}))
        return points
    if mode == "grid":
        grid: list[Point] = []
        chunks = (16 * KiB, 64 * KiB, MAX_CHUNK)
        windows = (32, 128, 512)
        margins = (RING_MARGIN, RING_AHEAD)
        buffers = ((256 * KiB, 64 * KiB), (1 * MiB, 256 * KiB), (4 * MiB, 1 * MiB))
        for chunk, window, margin, (high, low) in itertools.product(chunks, windows, margins, buffers):
            config = {
                "transfer.chunk_size": chunk,
                "transfer.window": window,
                "transfer.ring_slots": window + margin,
                "channel.buffered_high": high,
                "channel.buffered_low": low,
            }
            label = f"{fmt_size(chunk)} × w{window} × r{window + margin} × {_buffered_label(high, low)}"
            if config != _as_config(defaults, config):
                grid.append(("grid", label, config))
        return grid
    raise ValueError(f"unknown sweep mode {mode!r} (ofat, grid, quick)")


def _as_config(defaults: Config, config: dict[str, Any]) -> dict[str, Any]:
    values = {
        "transfer.chunk_size": defaults.transfer.chunk_size,
        "transfer.window": defaults.transfer.window,
        "transfer.ring_slots": defaults.transfer.ring_slots,
        "channel.buffered_high": defaults.channel.buffered_high,
        "channel.buffered_low": defaults.channel.buffered_low,
    }
    return {k: values[k] for k in config}


def default_positions(points: int, repeat: int) -> list[int]:
    """Where the default runs go among ``points`` others: spread from first to last."""
    if repeat <= 0:
        return []
    if repeat == 1:
        return [0]
    total = points + repeat
    return [round(i * (total - 1) / (repeat - 1)) for i in range(repeat)]


def plan(points: list[Point], repeat: int, default_repeat: int) -> list[Point | None]:
    """Run order: every point ``repeat`` times (round by round), with ``None`` (the
    defaults) spread from first to last."""
    others = [point for _ in range(repeat) for point in points]
    positions = set(default_positions(len(others), default_repeat))
    order: list[Point | None] = []
    pending = iter(others)
    for slot in range(len(others) + len(positions)):
        order.append(None if slot in positions else next(pending))
    return order


def run(bench: Bench) -> dict[str, Any]:
    s = bench.settings
    points = sweep_points(s.sweep_mode, bench.defaults)
    if s.sweep_factors:
        points = [p for p in points if p[0] in s.sweep_factors]
    size = s.sweep_size
    defaults_runs: list[dict[str, Any]] = []
    point_runs: dict[tuple[str, str], list[dict[str, Any]]] = {(p[0], p[1]): [] for p in points}
    d = bench.defaults
    raw_runs: list[dict[str, Any]] = []

    def measure_ceiling(when: str) -> None:
        # At the sweep's size: aiortc's rate depends on how long the transfer runs.
        log(f"sweep ceiling ({when}): raw aiortc DataChannel, {fmt_size(size)}")
        raw = run_raw_channel(
            size,
            message_size=d.transfer.chunk_size,
            buffered_high=d.channel.buffered_high,
            buffered_low=d.channel.buffered_low,
            cwnd_cap=bench.flight_cap,
        )
        log(f"  -> {fmt_rate(raw.steady_bytes_per_s)} steady")
        raw_runs.append(raw.as_dict())

    measure_ceiling("before")
    with bench.one_file(size) as path:
        for i, point in enumerate(plan(points, s.sweep_repeat, s.sweep_default_repeat)):
            if point is None:
                run = bench.transfer(f"sweep-defaults-{len(defaults_runs) + 1}", [path], size, 1)
                defaults_runs.append(transfer_metrics(run))
            else:
                run = bench.transfer(f"sweep-{point[0]}-{i + 1}", [path], size, 1, config=point[2])
                point_runs[(point[0], point[1])].append(transfer_metrics(run))
    measure_ceiling("after")
    return summarize(bench, size, defaults_runs, [(p, point_runs[(p[0], p[1])]) for p in points], raw_runs)


def _describe_defaults(d: Config) -> str:
    return (
        f"chunk {fmt_size(d.transfer.chunk_size)}, window {d.transfer.window}, ring {d.transfer.ring_slots}, "
        f"{_buffered_label(d.channel.buffered_high, d.channel.buffered_low)}"
    )


def summarize(
    bench: Bench,
    size: int,
    defaults_runs: list[dict[str, Any]],
    point_runs: list[tuple[Point, list[dict[str, Any]]]],
    raw_runs: list[dict[str, Any]],
) -> dict[str, Any]:
    d = bench.defaults
    base = median(r["steady_bytes_per_s"] for r in defaults_runs if r["ok"])
    ceil_rate = median(r["steady_bytes_per_s"] for r in raw_runs)

    def row(dimension: str, label: str, runs: list[dict[str, Any]]) -> list[str]:
        ok = [r for r in runs if r["ok"]]
        if not ok:
            return [dimension, label, "failed: " + str(runs[0]["error"] if runs else "?")[:60], "", "", "", "", "", "", ""]
        rate = median(r["steady_bytes_per_s"] for r in ok)
        return [
            dimension,
            label,
            fmt_rate(rate) + (f" (n={len(ok)})" if len(ok) > 1 else ""),
            fmt_ratio(ratio(rate, base)),
            fmt_ratio(ratio(rate, ceil_rate)),
            fmt_mib(median(r["sides"]["sender"]["peak_sum_pss"] for r in ok)),
            fmt_mib(median(r["sides"]["receiver"]["peak_sum_pss"] for r in ok)),
            str(sum(r["retransmitted_frames"] or 0 for r in ok)),
            str(sum(r["sides"]["sender"]["stalls_mid_transfer"] + r["sides"]["receiver"]["stalls_mid_transfer"] for r in ok)),
            ", ".join(f"{max(r.get('load') or [0]):.1f}" for r in ok),
        ]

    rows = [row("defaults", _describe_defaults(d), defaults_runs)]
    points_out = []
    for (dimension, label, config), runs in point_runs:
        rows.append(row(dimension, label, runs))
        ok = [r for r in runs if r["ok"]]
        rate = median(r["steady_bytes_per_s"] for r in ok)
        points_out.append(
            {
                "dimension": dimension,
                "label": label,
                "config": config,
                "steady_bytes_per_s": rate,
                "ratio_to_defaults": ratio(rate, base),
                "peak_sum_pss_both": median(
                    r["sides"]["sender"]["peak_sum_pss"] + r["sides"]["receiver"]["peak_sum_pss"] for r in ok
                ),
                "runs": runs,
            }
        )
    return {
        "title": f"Tuning sweep ({bench.settings.sweep_mode}): one {fmt_size(size)} file per point",
        "baseline": "the defaults, run first, last (and between) in the sweep; raw aiortc of the same size before and after",
        "params": {
            "bytes": size,
            "mode": bench.settings.sweep_mode,
            "repeat": bench.settings.sweep_repeat,
            "defaults": _describe_defaults(d),
        },
        "defaults_runs": defaults_runs,
        "ceiling_runs": raw_runs,
        "points": points_out,
        "result": {"defaults_steady_bytes_per_s": base, "ceiling_steady_bytes_per_s": ceil_rate},
        "table": {
            "columns": [
                "factor",
                "setting",
                "steady throughput",
                "vs defaults",
                "vs ceiling",
                "sender ΣPSS",
                "receiver ΣPSS",
                "retransmits",
                "stalls",
                "load (max of start/end, per run)",
            ],
            "rows": rows,
        },
    }
