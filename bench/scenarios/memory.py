"""memory: peak ΣPSS per side for growing file sizes, which must stay flat.

Baseline: the smallest size, in the same run; the figure is largest / smallest per
side (1.00× = flat: memory does not grow with the file). The raw aiortc peers'
PSS (ceiling) shows how much of it is the stack itself. A size already sent with
the defaults earlier in this run (large-file) is reused, not repeated.
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, log
from bench.report import fmt_mib, fmt_rate, fmt_ratio, fmt_size, ratio
from bench.scenarios import ceiling
from bench.transfer import transfer_metrics

FLAT_LIMIT = 1.15  # what the README calls flat: within 15 % (sampling jitter included)


def run(bench: Bench) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    for size in sorted(bench.settings.memory_sizes):
        earlier = bench.earlier_single_file(size)
        if earlier is not None:
            log(f"memory: reusing the {fmt_size(size)} run from earlier in this run ({earlier.run_dir.name})")
            metrics = transfer_metrics(earlier)
            metrics["reused"] = True
        else:
            with bench.one_file(size) as path:
                metrics = transfer_metrics(bench.transfer(f"memory-{fmt_size(size).replace(' ', '')}", [path], size, 1))
        points.append(metrics)
    return summarize(bench, points)


def summarize(bench: Bench, points: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [p for p in points if p["ok"]]
    ceil = ceiling.figures(bench) or {}
    result: dict[str, Any] = {"flat_limit": FLAT_LIMIT}
    if len(ok) >= 2:
        small, large = ok[0], ok[-1]
        for side in ("sender", "receiver"):
            r = ratio(large["sides"][side]["peak_sum_pss"], small["sides"][side]["peak_sum_pss"])
            result[f"{side}_largest_over_smallest"] = r
        result["flat"] = all(
            (result.get(f"{s}_largest_over_smallest") or 99) <= FLAT_LIMIT for s in ("sender", "receiver")
        )
    rows = []
    base = ok[0] if ok else None
    for p in points:
        if not p["ok"]:
            rows.append([fmt_size(p["bytes"]), "failed", "", "", "", "", ""])
            continue
        s, r = p["sides"]["sender"], p["sides"]["receiver"]
        rows.append(
            [
                fmt_size(p["bytes"]) + (" (reused)" if p.get("reused") else ""),
                fmt_rate(p["steady_bytes_per_s"]),
                fmt_mib(s["peak_sum_pss"]),
                fmt_mib(r["peak_sum_pss"]),
                f"{fmt_mib(s['peak_pss'].get('connection'))} / {fmt_mib(r['peak_pss'].get('connection'))}",
                fmt_ratio(ratio(s["peak_sum_pss"], base["sides"]["sender"]["peak_sum_pss"])) if base else "",
                fmt_ratio(ratio(r["peak_sum_pss"], base["sides"]["receiver"]["peak_sum_pss"])) if base else "",
            ]
        )
    raw = ceil.get("peak_pss", {})
    rows.append(
        [
            "raw aiortc peers (ceiling)",
            fmt_rate(ceil.get("steady_bytes_per_s")),
            fmt_mib(raw.get("sender")),
            fmt_mib(raw.get("receiver")),
            "",
            "",
            "",
        ]
    )
    return {
        "title": "Memory vs file size: peak ΣPSS per side",
        "baseline": "the smallest size in the same run (ratio largest/smallest; 1.00× = flat)",
        "params": {"sizes": [p["bytes"] for p in points]},
        "runs": points,
        "result": result,
        "table": {
            "columns": [
                "file size",
                "steady throughput",
                "sender ΣPSS",
                "receiver ΣPSS",
                "connection PSS (s/r)",
                "sender vs smallest",
                "receiver vs smallest",
            ],
            "rows": rows,
        },
    }
