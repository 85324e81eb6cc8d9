"""ceiling: the best the stack does here — a raw aiortc DataChannel, two processes.

The raw sender caps its SCTP flight the way the pipeline's sender does with the
defaults (``pipeline/connection/sctp_flight.py``), so the comparison is with the
stack as the pipeline runs it; one run of aiortc as shipped (no cap) is reported
beside it, to show what the cap is worth.

Baseline: the same two-process transfer over TCP loopback (the kernel's ceiling).
The raw aiortc runs are shared with the other scenarios: large-file asks for one
before and after each subject run, so the ceiling is measured interleaved with
what it is compared against. This scenario reports all of them (median, range).
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, log
from bench.raw_channel import run_tcp_loopback
from bench.report import (
    fmt_mib,
    fmt_number,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    fmt_size,
    fmt_spread,
    median,
    ratio,
)

TCP_SIZE = 256 << 20  # TCP loopback moves ~1 GB/s: less would be all noise


def figures(bench: Bench) -> dict[str, Any] | None:
    """Medians over every ceiling run so far (None if there was none)."""
    runs = bench.ceiling_runs
    if not runs:
        return None
    roles = ("sender", "receiver")
    return {
        "n": len(runs),
        "bytes": runs[0].total_bytes,
        "steady_bytes_per_s": median(r.steady_bytes_per_s for r in runs),
        "bytes_per_s": median(r.bytes_per_s for r in runs),
        "end_to_end_bytes_per_s": median(r.end_to_end_bytes_per_s for r in runs),
        "setup_s": median(r.setup_s for r in runs),
        "cpu_s_per_gb": {
            role: median(r.cpu_s[role] / (r.total_bytes / 1e9) for r in runs) for role in roles
        },
        "cpu_data_s_per_gb": {
            role: median(r.cpu_data_s[role] / (r.total_bytes / 1e9) for r in runs) for role in roles
        },
        "peak_pss": {role: median(r.peak_pss[role] for r in runs) for role in roles},
        "peak_sum_pss": median(r.peak_sum_pss for r in runs),
    }


def run(bench: Bench) -> dict[str, Any]:
    log("ceiling baseline: TCP loopback, same processes and messages")
    tcp = run_tcp_loopback(TCP_SIZE, message_size=bench.defaults.transfer.chunk_size)
    log(f"  -> {fmt_rate(tcp.bytes_per_s)}")
    if not bench.ceiling_runs:
        bench.measure_ceiling("ceiling scenario")
    shipped = bench.measure_ceiling("aiortc as shipped", as_shipped=True)
    return {"tcp": tcp.as_dict(), "as_shipped": shipped.as_dict()}


def finish(bench: Bench, started: dict[str, Any]) -> dict[str, Any]:
    """After every other scenario: top up to the wanted repetitions and summarise."""
    while len(bench.ceiling_runs) < bench.settings.ceiling_repeat:
        bench.measure_ceiling("repetition")
    f = figures(bench)
    assert f is not None
    tcp = started["tcp"]
    runs = bench.ceiling_runs
    rows = [
        [
            "throughput, steady (10–90 %)",
            fmt_spread([r.steady_bytes_per_s for r in runs]),
            fmt_rate(tcp["steady_bytes_per_s"]),
            fmt_ratio(ratio(f["steady_bytes_per_s"], tcp["steady_bytes_per_s"]), 3),
        ],
        [
            "throughput, channel open → last byte",
            fmt_spread([r.bytes_per_s for r in runs]),
            fmt_rate(tcp["bytes_per_s"]),
            fmt_ratio(ratio(f["bytes_per_s"], tcp["bytes_per_s"]), 3),
        ],
        ["setup (spawn → channel open)", fmt_seconds(f["setup_s"]), fmt_seconds(tcp["setup_s"]), ""],
    ]
    shipped = started.get("as_shipped")
    if shipped is not None:
        rows.append(
            [
                "aiortc as shipped (no flight cap), steady; last column: capped / as shipped",
                fmt_rate(shipped["steady_bytes_per_s"]),
                "",
                fmt_ratio(ratio(f["steady_bytes_per_s"], shipped["steady_bytes_per_s"])),
            ]
        )
    for role in ("sender", "receiver"):
        rows.append(
            [
                f"{role} CPU s/GB (= ms/MB), whole process",
                fmt_number(f["cpu_s_per_gb"][role]),
                fmt_number(tcp["cpu_s_per_gb"][role], 2),
                fmt_ratio(ratio(f["cpu_s_per_gb"][role], tcp["cpu_s_per_gb"][role]), 0),
            ]
        )
        rows.append([f"{role} peak PSS", fmt_mib(f["peak_pss"][role]), fmt_mib(tcp["peak_pss"][role]), ""])
    return {
        "title": "Ceiling: raw aiortc DataChannel between two processes",
        "baseline": "TCP loopback between two processes, same message size (same run)",
        "params": {
            "bytes": runs[0].total_bytes,
            "message_size": runs[0].message_size,
            "buffered_high": bench.defaults.channel.buffered_high,
            "buffered_low": bench.defaults.channel.buffered_low,
            "flight_cap": bench.flight_cap,
        },
        "runs": [r.as_dict() for r in runs],
        "as_shipped": shipped,
        "tcp": tcp,
        "result": f,
        "table": {
            "columns": [
                "metric",
                f"raw aiortc ({fmt_size(runs[0].total_bytes)}, median)",
                f"TCP loopback ({fmt_size(tcp['total_bytes'])})",
                "aiortc / TCP",
            ],
            "rows": rows,
        },
    }
