"""Bounding aiortc's SCTP flight on short paths: the second adapter over aiortc internals.

aiortc 1.16 never limits the data in flight by the peer's advertised receive
window. On a CPU-bound path (same host, LAN) nothing ever gets lost, so its
congestion window grows for the whole transfer, and ``_transmit`` walks the whole
sent queue after every SACK: the cost per packet grows with the flight and the
rate falls (a 4 GiB transfer ends a third slower than a 256 MiB one; see
``bench/README.md``, *The aiortc slowdown*). On the sending side we clamp the
congestion window after every SACK to a cap derived from the path's round-trip
time::

    cap = max(MIN_CAP, 2 x RATE_ALLOWANCE x RTT)

``RATE_ALLOWANCE`` (64 MB/s) is well above anything aiortc moves on this class of
machine, so the cap never holds a path below what it could carry: at 40 ms it is
5 MB, more than aiortc ever has in flight; on a LAN or the same host (RTT of a
millisecond or less) it is ``MIN_CAP``, 256 KiB. The RTT is the ICE consent
check's (``ice_probe.measure_rtt``), taken right after connecting, before data
queues up behind it. Without an RTT no cap is set.

With ``follow`` (the ``auto`` setting) the cap then follows the path's RTT for the
whole transfer, measured by a **probe**: every ``PROBE_INTERVAL`` seconds the window
is held at ``PROBE_FLIGHT`` (four packets) until the flight has drained to it, then
for ``max(2 x RTT, PROBE_SAMPLE_TIME)`` more, and the smallest RTT sample aiortc
takes in that time (``sctp_path.PathState.probe_min``) sets the cap; the window
saved at the start is given back. The samples taken at full flight cannot set it:
on a CPU-bound path (the same host, a LAN) the flight queues up in the peers'
processes, a cap of 2 x 64 MB/s x RTT is always larger than the flight that built
that RTT, and the cap grew without bound: on loopback a 3 GiB file's rate fell from
20 to 7-10 MB/s as aiortc's sent queue passed 1,300 chunks (docs/performance.md §7).
A probe costs about one RTT plus the sample time of reduced flight per interval
(~1 % at 1 ms, ~3 % at 40 ms).

Only ``_cwnd`` is lowered, after aiortc's own SACK handling ran: loss recovery,
slow start and retransmission are aiortc's, unchanged. The wrapper is installed
once per process (:func:`install`) and does nothing for a transport without a
cap. :func:`problems` names what this relies on; ``tests/unit/test_sctp_flight.py``
fails when the pinned aiortc changes shape.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiortc import RTCPeerConnection
from aiortc.rtcsctptransport import RTCSctpTransport

from pipeline.connection import sctp_path, sctp_sacks

log = logging.getLogger(__name__)

MIN_CAP: Final = 256 * 1024
RATE_ALLOWANCE: Final = 64_000_000  # bytes/s
_CAP_ATTRIBUTE: Final = "_pxfer_flight_cap"
_FOLLOW_ATTRIBUTE: Final = "_pxfer_flight_follow"
_PROBE_ATTRIBUTE: Final = "_pxfer_flight_probe"
PROBE_INTERVAL: Final = 4.0  # seconds between probes of the path RTT
PROBE_FLIGHT: Final = 4 * 1200  # bytes: the window while probing (about four packets)
PROBE_SAMPLE_TIME: Final = 0.02  # seconds, at least, of samples once drained
PROBE_GIVE_UP: Final = 1.0  # seconds: a phase that takes longer ends the probe unmeasured
_installed = False


def cap_for_rtt(rtt_s: float | None) -> int | None:
    """The cap for a path with this round-trip time; None when it is unknown."""
    if rtt_s is None or not math.isfinite(rtt_s) or rtt_s < 0:
        return None
    return max(MIN_CAP, math.ceil(2 * RATE_ALLOWANCE * rtt_s))


def resolve(setting: str | int, rtt_s: float | None) -> int | None:
    """The cap for the ``channel.flight_cap`` setting: ``"auto"`` from the RTT,
    ``"off"`` none, a number of bytes as it is."""
    if setting == "off":
        return None
    if setting == "auto":
        return cap_for_rtt(rtt_s)
    return int(setting)


@dataclass
class Probe:
    """One transport's RTT probe (follow mode): idle, draining or sampling."""

    next_at: float
    phase: str = "idle"
    since: float = 0.0
    saved_cwnd: int = 0
    measured: int = 0  # probes that set the cap
    last_rtt: float | None = None


def step_probe(sctp: Any, probe: Probe, path: sctp_path.PathState, now: float) -> bool:
    """Advance the probe after a SACK; True while it holds the window down."""
    if probe.phase == "idle":
        if now < probe.next_at:
            return False
        probe.phase, probe.since, probe.saved_cwnd = "draining", now, sctp._cwnd
    if probe.phase == "draining":
        # aiortc grows the window by a packet or so per SACK before sending: twice
        # the probe's window is drained.
        if sctp._flight_size > 2 * PROBE_FLIGHT:
            if now - probe.since > PROBE_GIVE_UP:
                return _end_probe(sctp, probe, path, now, None)
            return True
        probe.phase, probe.since = "sampling", now
        path.probing, path.probe_min = True, None
        return True
    best = path.probe_min
    if best is not None and now - probe.since >= max(2 * best, PROBE_SAMPLE_TIME):
        return _end_probe(sctp, probe, path, now, best)
    if now - probe.since > PROBE_GIVE_UP:
        return _end_probe(sctp, probe, path, now, best)
    return True


def _end_probe(sctp: Any, probe: Probe, path: sctp_path.PathState, now: float, rtt: float | None) -> bool:
    path.probing = False
    probe.phase, probe.next_at = "idle", now + PROBE_INTERVAL
    if rtt is not None:
        setattr(sctp, _CAP_ATTRIBUTE, cap_for_rtt(rtt))
        probe.measured += 1
        probe.last_rtt = rtt
    sctp._cwnd = max(sctp._cwnd, probe.saved_cwnd)
    return False


def problems() -> list[str]:
    """What the installed aiortc lacks for this adapter (empty when all is well)."""
    found = []
    if not callable(getattr(RTCSctpTransport, "_receive_sack_chunk", None)):
        found.append("aiortc RTCSctpTransport._receive_sack_chunk is missing")
    probe = RTCSctpTransport.__init__
    if "_cwnd" not in probe.__code__.co_names:
        found.append("aiortc RTCSctpTransport no longer sets _cwnd")
    return found


def install() -> bool:
    """Wrap SACK handling once per process so that a capped transport stays capped."""
    global _installed
    if _installed:
        return True
    sctp_sacks.install()  # the innermost layer of _receive_sack_chunk: before ours
    found = problems()
    if found:
        log.warning("SCTP flight cap unavailable: %s", "; ".join(found))
        return False
    original: Callable[[Any, Any], Awaitable[None]] = RTCSctpTransport._receive_sack_chunk

    @functools.wraps(original)
    async def receive_sack_chunk(self: Any, chunk: Any) -> None:
        await original(self, chunk)
        probe: Probe | None = getattr(self, _PROBE_ATTRIBUTE, None)
        if probe is not None:
            path = sctp_path.state_of(self)
            if path is not None and step_probe(self, probe, path, time.monotonic()):
                self._cwnd = min(self._cwnd, PROBE_FLIGHT)
                return
        cap = getattr(self, _CAP_ATTRIBUTE, None)
        if cap is not None and self._cwnd > cap:
            self._cwnd = cap

    RTCSctpTransport._receive_sack_chunk = receive_sack_chunk  # type: ignore[method-assign]
    _installed = True
    return True


def set_cap(pc: RTCPeerConnection, cap: int | None, *, follow: bool = False) -> int | None:
    """Cap ``pc``'s SCTP flight at ``cap`` bytes (None: no cap); returns what was set."""
    sctp = pc.sctp
    return None if sctp is None else cap_transport(sctp, cap, follow=follow)


def cap_transport(sctp: RTCSctpTransport, cap: int | None, *, follow: bool = False) -> int | None:
    """:func:`set_cap` for one SCTP transport. With ``follow`` the cap is set again
    by each probe of the path RTT (:class:`Probe`; ``sctp_path`` must be enabled on
    ``sctp``), so a path whose RTT rises mid-transfer is not held to its old cap."""
    if not install():
        return None
    setattr(sctp, _CAP_ATTRIBUTE, cap)
    setattr(sctp, _FOLLOW_ATTRIBUTE, follow)  # read by telemetry and tests
    setattr(sctp, _PROBE_ATTRIBUTE, Probe(next_at=time.monotonic() + PROBE_INTERVAL) if follow else None)
    if cap is not None and getattr(sctp, "_cwnd", 0) > cap:
        sctp._cwnd = cap
    return cap


def current_window(pc: RTCPeerConnection) -> int | None:
    """The SCTP congestion window now (bytes), for tests and telemetry."""
    sctp = pc.sctp
    value = getattr(sctp, "_cwnd", None) if sctp is not None else None
    return value if isinstance(value, int) else None
