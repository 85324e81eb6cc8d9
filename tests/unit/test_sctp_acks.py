"""sctp_acks: the receiver's record of arrivals as runs gives exactly aiortc's answers
(duplicate or not, cumulative TSN, its set, the SACK it sends), on arbitrary arrival
orders, across a FORWARD TSN, near the TSN wrap, and on a real lossy association."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import rtcsctptransport
from aiortc.rtcsctptransport import RTCSctpTransport
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.connection import sctp_acks
from tests.unit.sctp_link import Link, LinkConditions, associate, close, transfer

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024
WRAP = 1 << 32


def _receiver(last: int, enabled: bool) -> tuple[RTCSctpTransport, list[Any]]:
    """A bare transport whose cumulative TSN is ``last``, the SACKs it sends collected
    (called inside a running loop: aiortc's transport wants one)."""
    sctp = RTCSctpTransport(Link().server)  # type: ignore[arg-type]
    sctp._last_received_tsn = last
    sent: list[Any] = []

    async def send_chunk(chunk: Any) -> None:
        sent.append(chunk)

    sctp._send_chunk = send_chunk  # type: ignore[method-assign]
    if enabled:
        assert sctp_acks.enable(sctp)
    return sctp, sent


async def _sack(sctp: RTCSctpTransport, sent: list[Any]) -> tuple[int, list[tuple[int, int]], list[int]]:
    await sctp._send_sack()
    sack = sent.pop()
    assert not sctp._sack_needed and sctp._sack_duplicates == []
    return sack.cumulative_tsn, [tuple(g) for g in sack.gaps], list(sack.duplicates)


def test_the_pinned_aiortc_has_what_the_adapter_needs() -> None:
    assert sctp_acks.problems() == []
    assert sctp_acks.install() and sctp_acks.install()


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, WRAP - 100_000),
    arrivals=st.lists(st.tuples(st.integers(-3, 120), st.booleans()), min_size=1, max_size=400),
)
def test_every_answer_is_aiortc_s_own(start: int, arrivals: list[tuple[int, bool]]) -> None:
    async def run() -> None:
        ours, ours_sent = _receiver(start, enabled=True)
        theirs, theirs_sent = _receiver(start, enabled=False)
        for offset, then_sack in arrivals:
            tsn = (start + offset) % WRAP
            assert ours._mark_received(tsn) == theirs._mark_received(tsn)
            assert ours._last_received_tsn == theirs._last_received_tsn
            assert ours._sack_misordered == theirs._sack_misordered
            assert ours._sack_duplicates == theirs._sack_duplicates
            if then_sack:
                assert await _sack(ours, ours_sent) == await _sack(theirs, theirs_sent)

    asyncio.run(run())


async def _across_a_forward_tsn() -> None:
    ours, sent = _receiver(1000, enabled=True)
    theirs, theirs_sent = _receiver(1000, enabled=False)
    forward = rtcsctptransport.ForwardTsnChunk()
    forward.cumulative_tsn = 1010
    forward.streams = []
    for sctp in (ours, theirs):
        for tsn in (1003, 1004, 1012, 1013, 1020):
            sctp._mark_received(tsn)
        await sctp._receive_forward_tsn_chunk(forward)  # aiortc's own handler
        sctp._mark_received(1011)
    assert ours._last_received_tsn == theirs._last_received_tsn == 1013
    assert await _sack(ours, sent) == await _sack(theirs, theirs_sent) == (1013, [(7, 7)], [])


def test_a_forward_tsn_moving_aiortc_s_own_state_is_followed() -> None:
    asyncio.run(_across_a_forward_tsn())


async def _across_the_wrap() -> None:
    start = WRAP - 5
    ours, sent = _receiver(start, enabled=True)
    for offset in (2, 3, 6, 7, 8, 11):  # TSNs 2**32-3, -2, then 1, 2, 3 and 6 after the wrap
        assert not ours._mark_received((start + offset) % WRAP)
    assert await _sack(ours, sent) == (start, [(2, 3), (6, 8), (11, 11)], [])
    assert not ours._mark_received(start + 1)  # the hole at the bottom closes: 2**32-4 .. -2
    assert await _sack(ours, sent) == (WRAP - 2, [(3, 5), (8, 8)], [])
    for offset in (4, 5, 9, 10):
        ours._mark_received((start + offset) % WRAP)
    assert await _sack(ours, sent) == (6, [], [])
    assert ours._sack_misordered == set()


def test_gap_blocks_stay_in_serial_order_across_the_tsn_wrap() -> None:
    asyncio.run(_across_the_wrap())


async def _lossy_transfer() -> tuple[bool, int, int]:
    link = Link(LinkConditions(delay=0.010, loss=0.02), seed=11)
    client, server = await associate(link)
    assert sctp_acks.enable(server)
    gaps = 0
    send_chunk = server._send_chunk

    async def counting(chunk: Any) -> None:
        nonlocal gaps
        gaps += isinstance(chunk, rtcsctptransport.SackChunk) and bool(chunk.gaps)
        await send_chunk(chunk)

    server._send_chunk = counting  # type: ignore[method-assign]
    try:
        result = await transfer(client, server, 2 * MiB)
        return bool(result.data), gaps, len(server._sack_misordered)
    finally:
        await close(client, server)


def test_a_real_association_over_a_lossy_link_delivers_every_byte() -> None:
    ok, sacks_with_gaps, left = asyncio.run(_lossy_transfer())
    assert ok
    assert sacks_with_gaps > 10  # the runs were what the SACKs were built from
    assert left == 0
