"""Pieces of the connection process that need no peer: which event loop it runs on,
and the receiver's join retries, which back off because every ``unknown_room``
counts toward the signaling server's 20 failed joins per address per minute
(Appendix C.3), so a mistyped code costs a handful of them."""

from __future__ import annotations

import asyncio
import itertools
import time
from types import SimpleNamespace
from typing import ClassVar

import pytest
import uvloop

from pipeline.connection import process
from pipeline.connection.process import ConnectionProcess, event_loop_kind, join_retry_delays
from pipeline.signaling.client import SignalingError

FAILED_JOINS_PER_MINUTE = 20  # the server's limit per client address (C.3)


def test_event_loop_kind() -> None:
    for factory, kind in ((uvloop.new_event_loop, "uvloop"), (asyncio.new_event_loop, "asyncio")):
        loop = factory()
        try:
            assert event_loop_kind(loop) == kind
        finally:
            loop.close()


@pytest.mark.parametrize("join_wait", [0.0, 0.5, 1.0, 3.5, 10.0, 30.0, 60.0])
def test_join_retry_delays(join_wait: float) -> None:
    delays = join_retry_delays(join_wait)
    assert all(d > 0 for d in delays)
    assert sum(delays) == pytest.approx(join_wait)  # the last join is at the deadline
    assert delays[:-1] == [0.5 * 2**i for i in range(len(delays) - 1)]  # doubling
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))


def test_one_mistyped_code_costs_a_few_failed_joins() -> None:
    joins = len(join_retry_delays(10.0)) + 1  # the default join_wait; the first join is immediate
    assert joins <= 5
    # Three mistyped codes within a minute stay under the server's limit.
    assert 3 * joins < FAILED_JOINS_PER_MINUTE


class UnknownRoom:
    """A signaling client whose server knows no room (or answers ``code``)."""

    joins: ClassVar[list[float]] = []
    code: ClassVar[str] = "unknown_room"

    def __init__(self) -> None:
        self.closed = False

    async def connect(self, url: str) -> None:
        pass

    async def join(self, code: str, role: str) -> None:
        UnknownRoom.joins.append(time.monotonic())
        raise SignalingError(UnknownRoom.code, "no such room")

    async def close(self) -> None:
        self.closed = True


def join(monkeypatch: pytest.MonkeyPatch, code: str, join_wait: float) -> tuple[list[float], SignalingError]:
    """Run the receiver's real ``_join`` against ``UnknownRoom``; the joins' times and the error."""
    monkeypatch.setattr(process, "SignalingClient", UnknownRoom)
    monkeypatch.setattr(UnknownRoom, "joins", [])
    monkeypatch.setattr(UnknownRoom, "code", code)
    params = SimpleNamespace(role="receiver", code="7-orbit-lantern", signal_url="ws://127.0.0.1:9/ws", join_wait=join_wait)
    fake = SimpleNamespace(params=params, ctl=None, room=None)
    with pytest.raises(SignalingError) as caught:
        asyncio.run(ConnectionProcess._join(fake))  # type: ignore[arg-type]
    return UnknownRoom.joins, caught.value


def test_join_backs_off_then_says_no_sender_is_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    joins, error = join(monkeypatch, "unknown_room", join_wait=3.5)
    assert len(joins) == len(join_retry_delays(3.5)) + 1 == 4  # one a second would be 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(joins)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps  # backing off
    assert error.code == "unknown_room"
    assert error.message == "no sender is waiting under code '7-orbit-lantern': check the code and the URL"


def test_join_does_not_retry_a_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    joins, error = join(monkeypatch, "rate_limited", join_wait=10.0)
    assert len(joins) == 1
    assert (error.code, error.message) == ("rate_limited", "no such room")
