"""sctp_path: the pinned aiortc's shape, the path-RTT filter, and the loss response,
RTO floor and RTT-following flight cap on real aiortc associations over an impaired link.

The associations are aiortc's own ``RTCSctpTransport`` over ``sctp_link``'s in-process
link (seeded loss, fixed delay). The figures compared are congestion windows and
counts of events, never elapsed time: speed lives in the bench.
"""

from __future__ import annotations

import asyncio
import statistics

import pytest

from pipeline.connection import sctp_flight, sctp_path
from tests.unit.sctp_link import Link, LinkConditions, associate, close, transfer

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024


def test_the_pinned_aiortc_has_what_the_adapter_needs() -> None:
    assert sctp_path.problems() == []
    assert sctp_path.install() and sctp_path.install()


def test_the_path_rtt_is_a_windowed_minimum_that_follows_a_rise() -> None:
    s = sctp_path.PathState(epoch_start=0.0)
    for t, r in [(0.1, 0.003), (0.5, 0.001), (1.0, 0.002)]:
        s.sample(r, t)
    assert s.rtt == 0.001  # the minimum, not the latest
    for t in (1.5, 2.1, 3.0, 4.2):  # the path's RTT rose to 40 ms
        s.sample(0.040, t)
    assert s.rtt == 0.040


def test_a_queue_is_an_rtt_above_the_path_rtt() -> None:
    s = sctp_path.PathState(rtt=0.040)
    assert not s.queueing(0.045)
    assert s.queueing(0.040 * sctp_path.QUEUE_FACTOR + sctp_path.QUEUE_SLACK + 0.001)
    assert sctp_path.PathState().queueing(0.040)  # no path RTT yet: the RFC's reading


async def _lossy(enabled: bool, total: int) -> tuple[list[int], bool, sctp_path.PathState | None, float, Link]:
    link = Link(LinkConditions(delay=0.020, loss=0.01), seed=5)
    client, server = await associate(link)
    state = sctp_path.enable(client) if enabled else None
    expire = client._t3_expired

    def t3_expired() -> None:
        # A T3 timeout marks everything outstanding for retransmission (RFC 9260
        # 6.3.3): go-back resends, not repeated fast retransmits; counted apart.
        link.t3_resends += len(client._sent_queue)
        expire()

    client._t3_expired = t3_expired  # type: ignore[method-assign]
    windows: list[int] = []
    try:
        result = await transfer(client, server, total, on_progress=lambda _: windows.append(client._cwnd))
        return windows, bool(result.data), state, client._rto, link
    finally:
        await close(client, server)


def test_random_loss_without_a_queue_keeps_the_window_and_every_byte_arrives() -> None:
    total = 3 * MiB
    plain, plain_ok, _, plain_rto, _ = asyncio.run(_lossy(False, total))
    kept, kept_ok, state, rto, link = asyncio.run(_lossy(True, total))
    assert plain_ok and kept_ok  # bytes identical, both ways
    assert state is not None and state.random_losses >= 3, state
    assert state.rtt is not None and 0.039 < state.rtt < 0.060
    # aiortc alone halves on every loss and sits near the Mathis window (~12 packets);
    # kept, the window ends far above it.
    assert statistics.median(kept[len(kept) // 2 :]) > 3 * statistics.median(plain[len(plain) // 2 :])
    # A lost chunk is retransmitted about once, not again every three SACKs while its
    # retransmission is still on its way (24 per loss without the hold, at a kept window).
    assert state.held_strikes > 0
    # Some resends stay: a lost retransmission is resent again (its drop is counted),
    # and when this one-core loop is busy an ack can come later than the RTT estimate
    # allows. Either way far from the 24 per loss of the unguarded window.
    fast = link.retransmissions - link.t3_resends
    assert fast <= 2 * link.data_dropped, (link.retransmissions, link.t3_resends, link.data_dropped)
    # RTO: srtt + 4 rttvar floored at 200 ms, not RFC 9260's 1 s.
    assert plain_rto >= 1.0
    assert sctp_path.RTO_MIN <= rto < 1.0


async def _rtt_rise(monkeypatch: pytest.MonkeyPatch) -> tuple[bool, list[int | None], sctp_flight.Probe]:
    monkeypatch.setattr(sctp_path, "RTT_EPOCH", 0.2)
    monkeypatch.setattr(sctp_flight, "PROBE_INTERVAL", 0.3)
    link = Link(LinkConditions(delay=0.0005), seed=9)
    client, server = await associate(link)
    sctp_path.enable(client, loss_response=False)
    sctp_flight.cap_transport(client, sctp_flight.cap_for_rtt(0.001), follow=True)
    caps: list[int | None] = []
    total = 6 * MiB
    probe: sctp_flight.Probe = client._pxfer_flight_probe

    def progress(got: int) -> None:
        if got >= total // 4:
            link.conditions.delay = 0.020  # RTT 1 ms -> 40 ms mid-transfer
        caps.append(getattr(client, "_pxfer_flight_cap", None))

    try:
        result = await transfer(client, server, total, on_progress=progress)
        return bool(result.data), caps, probe
    finally:
        await close(client, server)


def test_the_flight_cap_follows_a_path_whose_rtt_rises(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, caps, probe = asyncio.run(_rtt_rise(monkeypatch))
    assert ok
    assert caps[0] is not None and caps[0] < 2 * sctp_flight.MIN_CAP  # a ~1 ms path: near the LAN cap
    # After the rise a probe measured the 40 ms path and set its cap (5 MB), not the
    # 256 KiB set at connect.
    assert probe.measured >= 1 and probe.last_rtt is not None and probe.last_rtt > 0.035
    assert caps[-1] == sctp_flight.cap_for_rtt(probe.last_rtt)
    assert caps[-1] is not None and caps[-1] > 10 * sctp_flight.MIN_CAP
