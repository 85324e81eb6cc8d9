"""large-file: one big file through pipeline-send → pipeline-receive with the defaults.

Baseline: the ceiling (raw aiortc), measured right before and after every subject
run (A B A B ... A), so drift in the machine's load hits both. Reported: steady
throughput (least-squares over 10–90 % of the bytes on the receiver) and end to
end (receiver's session, connection setup included), their ratios to the ceiling,
CPU seconds per GB per process, peak ΣPSS per side, stalls and retransmissions.
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench
from bench.report import (
    fmt_mib,
    fmt_number,
    fmt_ratio,
    fmt_size,
    fmt_spread,
    median,
    ratio,
)
from bench.scenarios import ceiling
from bench.transfer import transfer_metrics

TARGET_RATIO = 0.9


def run(bench: Bench) -> dict[str, Any]:
    size = bench.settings.large_size
    runs: list[dict[str, Any]] = []
    first_ceiling = len(bench.ceiling_runs)
    if not bench.ceiling_runs:
        bench.measure_ceiling("before large-file")
    else:
        first_ceiling -= 1  # the run just before ours is our "before"
    with bench.one_file(size) as path:
        for i in range(bench.settings.large_repeat):
            run = bench.transfer(f"large-{fmt_size(size).replace(' ', '')}-{i + 1}", [path], size, 1)
            runs.append(transfer_metrics(run))
            bench.measure_ceiling("after large-file")
    baseline_runs = bench.ceiling_runs[first_ceiling:]
    return summarize(bench, size, runs, [r.as_dict() for r in baseline_runs])


def summarize(bench: Bench, size: int, runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["ok"]]
    ceil = ceiling.figures(bench) or {}
    base_steady = median(r["steady_bytes_per_s"] for r in baseline_runs)
    base_e2e = median(r["end_to_end_bytes_per_s"] for r in baseline_runs)
    steady = median(r["steady_bytes_per_s"] for r in ok)
    e2e = median(r["end_to_end_bytes_per_s"] for r in ok)
    result: dict[str, Any] = {
        "steady_bytes_per_s": steady,
        "end_to_end_bytes_per_s": e2e,
        "ceiling_steady_bytes_per_s": base_steady,
        "ratio_steady": ratio(steady, base_steady),
        "ratio_end_to_end": ratio(e2e, base_e2e),
        "target_ratio": TARGET_RATIO,
        "failed_runs": len(runs) - len(ok),
    }
    rows: list[list[str]] = [
        [
            "throughput, steady (10–90 %)",
            fmt_spread([r["steady_bytes_per_s"] for r in ok]),
            fmt_spread([r["steady_bytes_per_s"] for r in baseline_runs]),
            fmt_ratio(result["ratio_steady"]),
        ],
        [
            "throughput, end to end (with connect)",
            fmt_spread([r["end_to_end_bytes_per_s"] for r in ok]),
            fmt_spread([r["end_to_end_bytes_per_s"] for r in baseline_runs]),
            fmt_ratio(result["ratio_end_to_end"]),
        ],
    ]
    raw_cpu = ceil.get("cpu_data_s_per_gb", {})  # while data flowed, like "steady" below
    raw_cpu_whole = ceil.get("cpu_s_per_gb", {})
    raw_pss = ceil.get("peak_pss", {})
    for side in ("sender", "receiver"):
        sides = [r["sides"][side] for r in ok if side in r["sides"]]
        steady_cpu = {
            role: median((s.get("steady_cpu_s_per_gb") or {}).get(role) for s in sides) for role in _roles(sides)
        }
        steady_total = median(s.get("steady_cpu_s_per_gb_total") for s in sides)
        whole_total = median(s["cpu_s_per_gb_total"] for s in sides)
        peak = median(s["peak_sum_pss"] for s in sides)
        result[side] = {
            "steady_cpu_s_per_gb": steady_cpu,
            "steady_cpu_s_per_gb_total": steady_total,
            "cpu_s_per_gb_total": whole_total,
            "peak_sum_pss": peak,
        }
        rows.append(
            [
                f"{side} CPU s/GB (= ms/MB) while streaming, connection process",
                fmt_number(steady_cpu.get("connection")),
                fmt_number(raw_cpu.get(side)),
                fmt_ratio(ratio(steady_cpu.get("connection"), raw_cpu.get(side))),
            ]
        )
        others = ", ".join(f"{role} {fmt_number(v)}" for role, v in steady_cpu.items() if role != "connection")
        rows.append(
            [
                f"{side} CPU s/GB while streaming, all processes ({others})",
                fmt_number(steady_total),
                fmt_number(raw_cpu.get(side)),
                fmt_ratio(ratio(steady_total, raw_cpu.get(side))),
            ]
        )
        rows.append(
            [
                f"{side} CPU s/GB whole run, all processes (start-up included)",
                fmt_number(whole_total),
                fmt_number(raw_cpu_whole.get(side)),
                fmt_ratio(ratio(whole_total, raw_cpu_whole.get(side))),
            ]
        )
        rows.append(
            [
                f"{side} peak ΣPSS (raw: its one process)",
                fmt_mib(peak),
                fmt_mib(raw_pss.get(side)),
                fmt_ratio(ratio(peak, raw_pss.get(side))),
            ]
        )
    stalls = [
        f"{r['sides'].get('sender', {}).get('stalls_mid_transfer', '?')}/"
        f"{r['sides'].get('receiver', {}).get('stalls_mid_transfer', '?')}"
        for r in ok
    ]
    rows.append(["stalls ≥1 s after the first byte (sender/receiver)", ", ".join(stalls) or "–", "", ""])
    rows.append(["retransmitted frames", ", ".join(str(r["retransmitted_frames"]) for r in ok) or "–", "", ""])
    result["stalls_mid_transfer"] = sum(
        r["sides"].get(side, {}).get("stalls_mid_transfer", 0) for r in ok for side in ("sender", "receiver")
    )
    result["retransmitted_frames"] = sum(r["retransmitted_frames"] or 0 for r in ok)
    return {
        "title": f"Large file: one {fmt_size(size)} file, default settings",
        "baseline": "raw aiortc DataChannel (ceiling), runs before and after each transfer (same run)",
        "params": {"bytes": size, "repeat": len(runs)},
        "runs": runs,
        "baseline_runs": baseline_runs,
        "result": result,
        "table": {
            "columns": ["metric", "pipeline", "ceiling (raw aiortc)", "pipeline / ceiling"],
            "rows": rows,
        },
    }


def _roles(sides: list[dict[str, Any]]) -> list[str]:
    roles: dict[str, None] = {}
    for side in sides:
        for role in side.get("steady_cpu_s_per_gb") or {}:
            roles.setdefault(role, None)
    return list(roles)
