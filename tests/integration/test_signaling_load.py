"""The signaling server under load, short form of ``python -m bench signaling``.

A real ``pipeline-signal`` process and real WebSocket clients: many rooms at
once, then floods (signals past the cap, oversize, garbage, code guessing from
another address, idle sockets, a receiver that stops reading) beside a witness
room that must keep working.  Only Appendix C's rules are asserted; memory and
timing are the bench's to report.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.signaling_load import (
    MAX_SIGNALS,
    UNKNOWN_ROOM_LIMIT,
    LoadPlan,
    run_load,
    signaling_server,
    verdicts,
)


def test_rooms_at_once_and_floods_keep_appendix_c_and_leave_other_rooms_working(
    tmp_path: Path,
) -> None:
    plan = LoadPlan(
        rooms=60,
        quiet_seconds=1.0,
        signal_flood=3000,
        oversize_clients=8,
        garbage_clients=20,
        guesses=UNKNOWN_ROOM_LIMIT + 10,
        idle_sockets=300,
        idle_hold=1.0,
        join_deadline=2.0,
        room_joins=270,
    )
    with signaling_server(tmp_path, join_deadline=plan.join_deadline) as server:
        result = asyncio.run(run_load(server, plan))
        assert server.rooms_closed() >= plan.rooms
    floods = result["floods"]
    # Each rule on its own, so a failure names it.
    assert result["rooms"]["exchanges_ok"] == plan.rooms, result["rooms"]["failures"]
    assert result["rooms"]["all_forgotten"], result["rooms"]
    assert floods["signals"]["relayed"] == MAX_SIGNALS, floods["signals"]
    assert (floods["signals"]["error"], floods["signals"]["closed"]) == ("rate_limited", True)
    assert floods["too_large"]["errors"] == {"too_large": plan.oversize_clients}
    assert floods["garbage"]["errors"] == {"bad_message": plan.garbage_clients}
    assert floods["guessing"]["first_rate_limited_at"] == UNKNOWN_ROOM_LIMIT + 1, floods["guessing"]
    assert floods["idle"]["refused"] == plan.idle_sockets - plan.max_unjoined, floods["idle"]
    assert floods["idle"]["still_open"] == plan.max_unjoined, floods["idle"]
    assert floods["idle"]["closed_at_deadline"] == plan.max_unjoined, floods["idle"]
    assert floods["rooms"]["open"] == plan.max_rooms, floods["rooms"]
    assert floods["rooms"]["outcomes"] == {
        "joined": plan.max_rooms,
        "rate_limited": plan.room_joins - plan.max_rooms,
    }, floods["rooms"]
    assert floods["rooms"]["reopened_after_close"] is True
    assert floods["slow_reader"]["sent_by_sender"] == MAX_SIGNALS
    assert result["witness_flood"]["failed"] == 0, result["witness_flood"]["failures"]
    assert result["witness_flood"]["n"] > 0
    assert all(verdicts(result, plan).values()), verdicts(result, plan)


@pytest.mark.parametrize("payload", ["x" * (64 * 1024 + 1), "{not json"])
def test_a_refused_client_does_not_count_against_the_address_for_joins(
    tmp_path: Path, payload: str
) -> None:
    """Refusals that are not failed joins leave the address's join budget whole."""
    from bench.signaling_load import guessing, refused_flood

    async def both(url: str) -> dict[str, object]:
        await refused_flood(url, UNKNOWN_ROOM_LIMIT + 5, payload, joined=False, seed=1)
        return await guessing(url, UNKNOWN_ROOM_LIMIT + 1, seed=2, local="127.0.0.1")

    with signaling_server(tmp_path) as server:
        result = asyncio.run(both(server.url))
    assert result["errors"] == {"unknown_room": UNKNOWN_ROOM_LIMIT, "rate_limited": 1}
