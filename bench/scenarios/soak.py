"""soak: ≥ 200 sessions through one signaling server, normal ones mixed with every fault.

Each session is one case of :data:`bench.soak.CASES` (normal, Ctrl-C either side,
SIGKILL of connection/reader/hasher/writer/supervisor on each side, a full disk,
a wrong digest), several at a time and back to back.  The goal is zero: wrong
verdicts (an outcome or exit code Appendix A does not give for that fault), files
left that are not verified copies, pre-existing files changed, ``/dev/shm``
segments or processes left once both CLIs have exited.

Baseline: what Appendix A requires of each case (no timing is compared here).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from bench import soak
from bench.context import Bench, log


def run(bench: Bench) -> dict[str, Any]:
    s = bench.settings
    work = bench.scratch / "soak"
    small, slow = soak.make_sources(work / "src")
    log(f"soak: {s.soak_sessions} sessions, {s.soak_concurrency} at a time, one signaling server")
    load = [os.getloadavg()[0]]

    def progress(record: soak.Record, done: int, total: int) -> None:
        load.append(os.getloadavg()[0])
        flag = (
            "ok"
            if record.clean
            else f"PROBLEM {record.wrong_verdict or ''} {record.processes_left or ''} {record.shm_left or ''} {record.bad_files or ''}"
        )
        log(
            f"  {done}/{total} {record.case}: exits {record.exit_codes} in {record.seconds:.1f} s {flag}"
        )

    started = time.monotonic()
    records = soak.run_soak(
        work / "runs", s.soak_sessions, s.soak_concurrency, small, slow, progress=progress
    )
    elapsed = time.monotonic() - started
    problems = [r for r in records if not r.clean]
    if not problems:
        shutil.rmtree(work, ignore_errors=True)
    else:  # kept for a look: the sessions' logs
        kept = bench.out_dir / "soak-problems"
        shutil.copytree(work / "runs", kept, dirs_exist_ok=True)
    rows = soak.tabulate(records)
    totals = {
        key: sum(row[key] for row in rows)
        for key in (
            "sessions",
            "wrong_verdicts",
            "fault_missed",
            "bad_files",
            "preexisting_changed",
            "shm_left",
            "processes_left",
        )
    }
    columns = [
        "case",
        "sessions",
        "expected (outcome, exit)",
        "wrong verdicts",
        "fault missed",
        "files left",
        "bad files",
        "pre-existing changed",
        "shm left",
        "processes left",
        "median s",
        "orphans gone in (max s)",
    ]
    table_rows = [
        [
            r["case"],
            r["sessions"],
            r["expected"],
            r["wrong_verdicts"],
            r["fault_missed"],
            r["files_left"],
            r["bad_files"],
            r["preexisting_changed"],
            r["shm_left"],
            r["processes_left"],
            f"{r['median_s']:.1f}",
            "" if r["orphans_max_s"] is None else f"{r['orphans_max_s']:.2f}",
        ]
        for r in rows
    ]
    table_rows.append(
        [
            "all",
            totals["sessions"],
            "",
            totals["wrong_verdicts"],
            totals["fault_missed"],
            "",
            totals["bad_files"],
            totals["preexisting_changed"],
            totals["shm_left"],
            totals["processes_left"],
            "",
            "",
        ]
    )
    return {
        "title": f"Soak: {len(records)} sessions, {s.soak_concurrency} at a time, in {elapsed:.0f} s",
        "baseline": "what Appendix A requires of each case; zero leaks, zero wrong verdicts, zero data loss",
        "params": {
            "sessions": s.soak_sessions,
            "concurrency": s.soak_concurrency,
            "load_avg_1m": [min(load), max(load)],
        },
        "runs": soak.as_dicts(records),
        "result": {**totals, "clean": not problems, "elapsed_s": round(elapsed, 1)},
        "table": {"columns": columns, "rows": table_rows},
    }
