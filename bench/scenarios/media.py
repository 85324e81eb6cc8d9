"""media: a camera-dump directory of many small files vs one file of the same total.

2,000 × 64 KiB files (optionally plus a few large ones) against a single file of
exactly the same number of bytes, in the same run, ordered A B B A when repeated.
The ratio (directory / one file) is what per-file work costs: opening, hashing
and verifying each file, and the manifest. Target (issue 13): ≥ 0.95×, and
≥ 2,000 files/s for 20,000 × 4 KiB.
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
from bench.transfer import transfer_metrics

TARGET_RATIO = 0.95


def _order(repeat: int) -> list[str]:
    """file, dir, dir, file, file, dir, ...: drift in machine load hits both cases alike."""
    pattern = ["file", "dir", "dir", "file"]
    return [pattern[i % 4] for i in range(2 * repeat)]


def run(bench: Bench) -> dict[str, Any]:
    s = bench.settings
    runs: dict[str, list[dict[str, Any]]] = {"file": [], "dir": []}
    media = bench.media_tree(s.media_files, s.media_file_size, s.media_large, s.media_large_size)
    # The one file is generated after the tree, with exactly the tree's total size.
    with media as (tree, total, files), bench.one_file(total) as single:
        for i, case in enumerate(_order(s.media_repeat)):
            if case == "dir":
                run = bench.transfer(f"media-dir-{i + 1}", [tree], total, files)
            else:
                run = bench.transfer(f"media-onefile-{i + 1}", [single], total, 1)
            runs[case].append(transfer_metrics(run))
    return summarize(total, files, runs, s.media_file_size, s.media_large)


def summarize(
    total: int, files: int, runs: dict[str, list[dict[str, Any]]], small_size: int, large: int
) -> dict[str, Any]:
    ok = {case: [r for r in rs if r["ok"]] for case, rs in runs.items()}
    med = {
        case: {
            key: median(r[key] for r in rs)
            for key in ("steady_bytes_per_s", "end_to_end_bytes_per_s", "files_per_s")
        }
        for case, rs in ok.items()
    }
    result = {
        "ratio_steady": ratio(med["dir"]["steady_bytes_per_s"], med["file"]["steady_bytes_per_s"]),
        "ratio_end_to_end": ratio(med["dir"]["end_to_end_bytes_per_s"], med["file"]["end_to_end_bytes_per_s"]),
        "files_per_s": med["dir"]["files_per_s"],
        "target_ratio": TARGET_RATIO,
        "failed_runs": sum(len(runs[c]) - len(ok[c]) for c in runs),
        "medians": med,
    }
    rows = []
    for case, label in (("dir", f"directory: {files} files"), ("file", "one file")):
        rs = ok[case]
        rows.append(
            [
                label,
                fmt_spread([r["steady_bytes_per_s"] for r in rs]),
                fmt_spread([r["end_to_end_bytes_per_s"] for r in rs]),
                fmt_number(med[case]["files_per_s"]) if case == "dir" else "–",
                fmt_mib(median(r["sides"]["sender"]["peak_sum_pss"] for r in rs)),
                fmt_mib(median(r["sides"]["receiver"]["peak_sum_pss"] for r in rs)),
                ", ".join(
                    f"{r['sides']['sender']['stalls_mid_transfer']}/{r['sides']['receiver']['stalls_mid_transfer']}"
                    for r in rs
                ),
            ]
        )
    rows.append(
        [
            "directory / one file",
            fmt_ratio(result["ratio_steady"]),
            fmt_ratio(result["ratio_end_to_end"]),
            "",
            "",
            "",
            "",
        ]
    )
    what = f"{files - large} × {fmt_size(small_size)}" + (f" + {large} large" if large else "")
    return {
        "title": f"Media directory: {what} files ({fmt_size(total)}) vs one file of the same size",
        "baseline": "one file of the same total size, same run",
        "params": {"bytes": total, "files": files, "small_size": small_size, "large_files": large},
        "runs": runs,
        "result": result,
        "table": {
            "columns": [
                "case",
                "steady throughput",
                "end to end",
                "files/s",
                "sender ΣPSS",
                "receiver ΣPSS",
                "stalls s/r",
            ],
            "rows": rows,
        },
    }
