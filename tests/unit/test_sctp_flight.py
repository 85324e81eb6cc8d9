"""sctp_flight: the cap formula, the pinned aiortc's shape, and the cap on a real association.

The association test runs two real RTCPeerConnections in one event loop (host
candidates on this machine's own addresses, as in ``test_ice_probe.py``) and
pushes data through a DataChannel with bufferedAmount backpressure, sampling the
sender's SCTP congestion window after every send.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from pipeline.connection import sctp_flight
from tests.unit.test_ice_probe import connect_pair, requires_host_address

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


def test_the_pinned_aiortc_has_what_the_cap_needs() -> None:
    assert sctp_flight.problems() == []
    assert sctp_flight.install() and sctp_flight.install()  # idempotent


@pytest.mark.parametrize(
    ("rtt_s", "cap"),
    [
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        (-0.001, None),
        (0.0, sctp_flight.MIN_CAP),
        (0.0006, sctp_flight.MIN_CAP),  # same host, LAN
        (0.005, 640_000),
        (0.040, 5_120_000),  # twice what 64 MB/s keeps in flight at 40 ms
    ],
)
def test_cap_for_rtt(rtt_s: float | None, cap: int | None) -> None:
    assert sctp_flight.cap_for_rtt(rtt_s) == cap


def test_resolve_the_config_setting() -> None:
    assert sctp_flight.resolve("off", 0.001) is None
    assert sctp_flight.resolve("auto", 0.040) == sctp_flight.cap_for_rtt(0.040)
    assert sctp_flight.resolve("auto", None) is None
    assert sctp_flight.resolve(1 << 20, None) == 1 << 20


def test_the_cap_never_holds_a_path_below_the_rate_allowance() -> None:
    for rtt_ms in (0.1, 1, 3, 10, 40, 150, 600):
        cap = sctp_flight.cap_for_rtt(rtt_ms / 1000)
        assert cap is not None and cap / (rtt_ms / 1000) >= 2 * sctp_flight.RATE_ALLOWANCE * (1 - 1e-9)


async def _largest_window(cap: int | None, total: int) -> tuple[int, int]:
    """Send ``total`` bytes; return (largest cwnd seen after the first MiB, bytes received)."""
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received = 0
    done = asyncio.Event()

    @b.on("datachannel")
    def on_channel(channel: object) -> None:
        @channel.on("message")  # type: ignore[attr-defined]
        def on_message(message: bytes) -> None:
            nonlocal received
            received += len(message)
            if received >= total:
                done.set()

    try:
        await connect_pair(a, b)
        assert sctp_flight.set_cap(a, cap) == cap
        channel = a.sctp._data_channels[next(iter(a.sctp._data_channels))]  # type: ignore[union-attr]
        low = asyncio.Event()
        channel.bufferedAmountLowThreshold = 256 * 1024
        channel.on("bufferedamountlow", low.set)
        payload = bytes(64 * 1024)
        largest = 0
        for sent in range(0, total, len(payload)):
            while channel.bufferedAmount > 1 * MiB:
                low.clear()
                await asyncio.wait_for(low.wait(), 10)
            channel.send(payload)
            window = sctp_flight.current_window(a)
            if sent >= 1 * MiB and window is not None:
                largest = max(largest, window)
            await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 30)
        return largest, received
    finally:
        await a.close()
        await b.close()


@requires_host_address
def test_a_capped_association_keeps_its_window_at_the_cap_and_delivers_everything() -> None:
    cap = 64 * 1024  # a third of where an uncapped loopback window goes within 12 MiB
    total = 12 * MiB
    capped, got = asyncio.run(_largest_window(cap, total))
    assert got == total
    assert 0 < capped <= cap
    uncapped, got = asyncio.run(_largest_window(None, total))
    assert got == total
    # Without the cap the window grows past it: the cap is what held it.
    assert uncapped > cap, uncapped
    assert math.isfinite(uncapped)
