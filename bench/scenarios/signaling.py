"""signaling: the server under 200 concurrent rooms and under clients that flood it.

A real ``pipeline-signal`` process, real WebSocket clients (:mod:`bench.signaling_load`):
200 rooms open at once, each relaying a whole exchange both ways; then, beside a
*witness* that keeps opening fresh rooms, a signal flood, oversize and garbage
messages, online code guessing from another address, hundreds of idle sockets and
a receiver that stops reading.  Each part is judged against Appendix C (C.2 and
C.3 limits), with the server's resident memory beside it.

Baseline: the witness on a quiet server, measured in the same run; its exchange
time during the floods is reported as a ratio to that.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench.context import Bench, log
from bench.report import fmt_ratio
from bench.signaling_load import (
    IDLE_ADDRESS,
    ROOMS_ADDRESS,
    LoadPlan,
    run_load,
    signaling_server,
    verdicts,
)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def plan_for(quick: bool) -> LoadPlan:
    return LoadPlan(rooms=50, guesses=40, idle_sockets=300, room_joins=280) if quick else LoadPlan()


def run(bench: Bench) -> dict[str, Any]:
    plan = plan_for(bench.settings.quick)
    log(f"signaling: {plan.rooms} rooms at once, then floods beside a witness room")
    load_before = os.getloadavg()[0]
    with signaling_server(bench.scratch / "signaling", join_deadline=plan.join_deadline) as server:
        result = asyncio.run(run_load(server, plan))
    held = verdicts(result, plan)
    for check, ok in held.items():
        log(f"  {'held' if ok else 'BROKEN'}: {check}")
    rooms, floods = result["rooms"], result["floods"]
    quiet, flood = result["witness_quiet"], result["witness_flood"]
    sig, guess, idle, opened, slow = (
        floods["signals"],
        floods["guessing"],
        floods["idle"],
        floods["rooms"],
        floods["slow_reader"],
    )
    rows = [
        [
            f"{rooms['rooms']} rooms at once ({rooms['sockets']} sockets, {rooms['messages_per_room']} signals each)",
            f"{rooms['exchanges_ok']}/{rooms['rooms']} relayed unchanged, {rooms['rooms_forgotten']} forgotten after;"
            f" exchange p50 {rooms['relay']['p50_ms']:.0f} ms, p99 {rooms['relay']['p99_ms']:.0f} ms",
            f"RSS {_mib(rooms['rss_idle'])} idle → {_mib(rooms['rss_peak'])} peak → {_mib(rooms['rss_after'])} after",
        ],
        [
            f"signal flood ({sig['attempted']:,} candidates, no pause)",
            f"peer got {sig['relayed']}, flooder `{sig['error']}`, {'closed' if sig['closed'] else 'NOT closed'}",
            "",
        ],
        [
            f"too large ({floods['too_large']['clients']} × {floods['too_large']['bytes_each']:,} B)",
            f"{floods['too_large']['errors']}, {floods['too_large']['closed']} closed",
            "",
        ],
        [
            f"garbage ({floods['garbage']['clients']} clients)",
            f"{floods['garbage']['errors']}, {floods['garbage']['closed']} closed",
            "",
        ],
        [
            f"code guessing ({guess['attempts']} joins from 127.0.0.2)",
            f"{guess['errors']}; rate_limited from join {guess['first_rate_limited_at']}",
            "",
        ],
        [
            f"idle sockets ({idle['sockets']} from {IDLE_ADDRESS}, never join)",
            f"{idle['refused']} rate_limited (cap {plan.max_unjoined}); {idle['still_open']} open at"
            f" {idle['held_s']:.0f} s, {idle['closed_at_deadline']} closed by the server,"
            f" the last at {idle['last_closed_s'] or 0:.1f} s (join deadline {plan.join_deadline:g} s)",
            f"RSS +{_mib(idle['rss_during'] - idle['rss_before'])} ({idle['bytes_per_socket'] / 1024:.1f} KiB/socket)",
        ],
        [
            f"rooms from one address ({opened['joins']} sender joins from {ROOMS_ADDRESS}, kept open)",
            f"{opened['open']} open, {opened['refused']} rate_limited (cap {plan.max_rooms});"
            f" after closing them a new room {'opens' if opened['reopened_after_close'] else 'is STILL refused'}",
            f"RSS +{_mib(opened['rss_during'] - opened['rss_before'])} ({opened['bytes_per_room'] / 1024:.1f} KiB/room)",
        ],
        [
            f"slow reader ({_mib(slow['offered_bytes'])} pushed at it)",
            f"sender wrote {slow['sent_by_sender']} signals",
            f"RSS +{_mib(max(0, slow['held_bytes']))} at peak",
        ],
        [
            "witness room, during floods vs quiet",
            f"{flood['n']} exchanges, {flood['failed']} failed (quiet: {quiet['n']}, {quiet['failed']} failed);"
            f" p50 {flood['p50_ms']:.1f} vs {quiet['p50_ms']:.1f} ms ({fmt_ratio(flood['p50_ms'] / quiet['p50_ms'])}),"
            f" p99 {flood['p99_ms']:.1f} vs {quiet['p99_ms']:.1f} ms ({fmt_ratio(flood['p99_ms'] / quiet['p99_ms'])})",
            f"RSS {_mib(result['rss_before_floods'])} → {_mib(result['rss_flood_peak'])} peak → {_mib(result['rss_end'])} end",
        ],
    ]
    return {
        "title": f"Signaling server: {plan.rooms} concurrent rooms and flooding clients",
        "baseline": "the witness room's exchange time on the quiet server, same run",
        "params": {
            **{k: v for k, v in vars(plan).items() if k != "extra"},
            "load_avg_1m": load_before,
        },
        "runs": [result],
        "result": {"held": held, "all_held": all(held.values())},
        "table": {"columns": ["load", "what happened", "server memory"], "rows": rows},
    }
