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
queues up behind it. Without an RTT no cap is set. With ``follow`` (the ``auto``
setting) the cap then follows the path RTT that ``sctp_path`` keeps from SCTP's own
samples for the whole transfer (a windowed minimum, so our own queue cannot raise it).

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
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiortc import RTCPeerConnection
from aiortc.rtcsctptransport import RTCSctpTransport

from pipeline.connection import sctp_path, sctp_sacks

log = logging.getLogger(__name__)

MIN_CAP: Final = 256 * 1024
RATE_ALLOWANCE: Final = 64_000_000  # bytes/s
_CAP_ATTRIBUTE: Final = "_pxfer_flight_cap"
_FOLLOW_ATTRIBUTE: Final = "_pxfer_flight_follow"
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
        if getattr(self, _FOLLOW_ATTRIBUTE, False):
            path = sctp_path.state_of(self)
            if path is not None and path.rtt is not None:
                setattr(self, _CAP_ATTRIBUTE, cap_for_rtt(path.rtt))
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
    """:func:`set_cap` for one SCTP transport. With ``follow`` the cap is recomputed
    after every SACK from the path RTT ``sctp_path`` tracks (it must be enabled on
    ``sctp``), so a path whose RTT rises mid-transfer is not held to its old cap."""
    if not install():
        return None
    setattr(sctp, _CAP_ATTRIBUTE, cap)
    setattr(sctp, _FOLLOW_ATTRIBUTE, follow)
    if cap is not None and getattr(sctp, "_cwnd", 0) > cap:
        sctp._cwnd = cap
    return cap


def current_window(pc: RTCPeerConnection) -> int | None:
    """The SCTP congestion window now (bytes), for tests and telemetry."""
    sctp = pc.sctp
    value = getattr(sctp, "_cwnd", None) if sctp is not None else None
    return value if isinstance(value, int) else None
