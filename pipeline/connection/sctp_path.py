"""Following the path under aiortc's SCTP: its RTT, a shorter RTO floor, and a
congestion response that does not mistake random loss for congestion.

The third adapter over aiortc internals (after ``ice_probe`` and ``sctp_flight``);
``docs/performance.md`` has the measurements behind every number here. aiortc 1.16
implements RFC 9260's Reno faithfully: every fast retransmit halves the congestion
window. On a path with random loss (Wi-Fi, a lossy long-distance link) that caps the
rate at the Mathis bound, MSS/RTT x 1.22/sqrt(p): 0.35 MB/s at 40 ms and 1 %, what the
lab measured. No standard loss-based response can do better; the cure has to tell a
loss caused by a full queue from a random one.

What this module changes, per transport that opts in (:func:`enable`), and only there:

- **Path RTT**: a windowed minimum of aiortc's own RTT samples (first transmissions
  only, Karn's rule), refreshed every ``RTT_EPOCH`` seconds so it follows a path whose
  RTT rises or falls. The minimum, not srtt: srtt includes the queue our own flight
  builds, and following it would let the flight grow its own cap (``sctp_flight``).
- **RTO floor**: ``RTO_MIN`` (200 ms) instead of RFC 9260's 1 s, the RTO otherwise
  srtt + 4 x rttvar as aiortc computes it. A lost retransmission then stalls the
  association for 0.2 s, not 1 s.
- **Loss response** (a deliberate departure from RFC 9260 section 7.2.3): when aiortc
  enters fast recovery, the window is halved only if the path shows a queue, i.e. the
  smoothed RTT is above ``QUEUE_FACTOR`` x the path RTT + ``QUEUE_SLACK``. Without a
  queue the loss is taken as random and the window is kept. A real bottleneck builds a
  queue before it drops, so congestion still halves the window; the flight cap bounds
  the window in any case, and a T3 timeout (a blackout) still collapses it to one
  packet as the RFC says. This is a delay-based reading of loss, like BBR's or
  Westwood's, not Reno.

- **One fast retransmit per RTT per chunk**: aiortc clears a chunk's miss count when it
  retransmits it and strikes it again on every later SACK that reports data above it,
  so with a large window a chunk already retransmitted is retransmitted again three
  SACKs later, long before its retransmission could have arrived (RFC 9260 section
  7.2.4 fast-retransmits a chunk once). Measured: 2.6 retransmissions per lost packet
  with aiortc's own window, 24 with a kept window. Here a retransmitted chunk is not
  struck until max(``REPAIR_FACTOR`` x srtt, srtt + 4 x rttvar) after its
  retransmission; if it is still
  missing then, three more reports retransmit it again (a lost retransmission),
  without waiting for T3.

Everything else (fast retransmit after three missing reports, retransmission, slow
start and congestion avoidance) stays aiortc's, handled per gap block by ``sctp_sacks``
(same effects, less CPU). :func:`problems` names what this relies on;
``tests/unit/test_sctp_path.py`` fails when the pinned aiortc changes shape.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from aiortc import rtcsctptransport
from aiortc.rtcsctptransport import RTCSctpTransport

from pipeline.connection import sctp_sacks

log = logging.getLogger(__name__)

RTO_MIN: Final = 0.2  # seconds; RFC 9260 says 1 s
RTT_EPOCH: Final = 2.0  # seconds; the path RTT is the minimum over the last one or two
QUEUE_FACTOR: Final = 1.25
QUEUE_SLACK: Final = 0.005  # seconds: scheduling noise on a 1 ms path is not a queue
REPAIR_FACTOR: Final = 2.0
_NO_STRIKES: Final = -(1 << 30)  # aiortc's miss count never climbs from here to 3
_RTX_AT: Final = "_pxfer_rtx"
_STATE: Final = "_pxfer_path"
_installed = False


@dataclass
class PathState:
    """What we follow on one association (read by sctp_flight and telemetry)."""

    rtt: float | None = None  # windowed minimum RTT sample (s)
    epoch_start: float = 0.0
    epoch_min: float | None = None
    random_losses: int = 0  # fast recoveries whose halving we undid
    held_strikes: int = 0  # SACKs on which a recent retransmission was kept from a new one
    congestion_losses: int = 0  # fast recoveries left halved (queue seen)
    loss_response: bool = True
    # While sctp_flight drains the flight to measure the path (its probe): the
    # smallest sample taken meanwhile.
    probing: bool = False
    probe_min: float | None = None

    def sample(self, r: float, now: float) -> None:
        if self.probing and (self.probe_min is None or r < self.probe_min):
            self.probe_min = r
        if self.epoch_min is None or r < self.epoch_min:
            self.epoch_min = r
        if self.rtt is None or r < self.rtt:
            self.rtt = r
        if now - self.epoch_start >= RTT_EPOCH:
            self.rtt = self.epoch_min
            self.epoch_start = now
            self.epoch_min = None

    def queueing(self, srtt: float | None) -> bool:
        """Does the smoothed RTT show a queue above the path's own RTT?"""
        if srtt is None or self.rtt is None:
            return True  # no evidence: be conservative, as the RFC is
        return srtt > QUEUE_FACTOR * self.rtt + QUEUE_SLACK


def problems() -> list[str]:
    """What the installed aiortc lacks for this adapter (empty when all is well)."""
    found = []
    for name in ("_receive_sack_chunk", "_update_rto", "_data_channel_flush"):
        if not callable(getattr(RTCSctpTransport, name, None)):
            found.append(f"aiortc RTCSctpTransport.{name} is missing")
    # The shape of aiortc's own functions, under any wrapper of ours (functools.wraps).
    names = RTCSctpTransport.__init__.__code__.co_names
    names += inspect.unwrap(RTCSctpTransport._receive_sack_chunk).__code__.co_names
    for attr in ("_cwnd", "_ssthresh", "_fast_recovery_exit", "_srtt", "_rttvar", "_rto"):
        if attr not in names:
            found.append(f"aiortc RTCSctpTransport no longer sets {attr}")
    for constant in ("SCTP_RTO_MAX", "SCTP_TSN_MODULO"):
        if not hasattr(rtcsctptransport, constant):
            found.append(f"aiortc has no rtcsctptransport.{constant}")
    for attr in ("_misses", "_sent_count", "_retransmit"):
        if attr not in rtcsctptransport.DataChunk.__annotations__:
            found.append(f"aiortc DataChunk has no {attr}")
    return found


def install() -> bool:
    """Wrap RTT sampling and SACK handling once per process; idempotent."""
    global _installed
    if _installed:
        return True
    sctp_sacks.install()  # the innermost layer of _receive_sack_chunk: before ours
    found = problems()
    if found:
        log.warning("SCTP path adjustments unavailable: %s", "; ".join(found))
        return False
    original_rto: Callable[[Any, float], None] = RTCSctpTransport._update_rto
    original_sack: Callable[[Any, Any], Awaitable[None]] = RTCSctpTransport._receive_sack_chunk

    @functools.wraps(original_rto)
    def update_rto(self: Any, r: float) -> None:
        original_rto(self, r)
        state: PathState | None = getattr(self, _STATE, None)
        if state is None:
            return
        state.sample(r, time.monotonic())
        self._rto = max(RTO_MIN, min(self._srtt + 4 * self._rttvar, rtcsctptransport.SCTP_RTO_MAX))

    @functools.wraps(original_sack)
    async def receive_sack_chunk(self: Any, chunk: Any) -> None:
        state: PathState | None = getattr(self, _STATE, None)
        if state is None or not state.loss_response:
            await original_sack(self, chunk)
            return
        if chunk.gaps:
            _hold_strikes(self, chunk, state)
        cwnd, ssthresh, recovering = self._cwnd, self._ssthresh, self._fast_recovery_exit is not None
        await original_sack(self, chunk)
        if recovering or self._fast_recovery_exit is None:
            return  # no new fast recovery began on this SACK
        if state.queueing(self._srtt):
            state.congestion_losses += 1
            return
        state.random_losses += 1
        self._cwnd = max(self._cwnd, cwnd)
        self._ssthresh = max(self._ssthresh, ssthresh, cwnd)
        await self._data_channel_flush()  # aiortc sent with the halved window; fill it

    RTCSctpTransport._update_rto = update_rto  # type: ignore[method-assign,assignment]
    RTCSctpTransport._receive_sack_chunk = receive_sack_chunk  # type: ignore[method-assign]
    _installed = True
    return True


def _hold_strikes(sctp: Any, sack: Any, state: PathState) -> None:
    """Keep chunks retransmitted less than REPAIR_FACTOR x srtt ago from being struck by
    this SACK; release those whose repair is overdue so aiortc's three strikes resume.
    Only the chunks in the SACK's holes can be struck: those are the ones looked at."""
    now = time.monotonic()
    # Overdue: later than the RTT estimate allows (the RTO's formula, without its floor).
    srtt, rttvar = sctp._srtt or 0.0, sctp._rttvar or 0.0
    patience = max(REPAIR_FACTOR * srtt, srtt + 4 * rttvar)
    held = False
    for schunk in _struck_by(sctp._sent_queue, sack):
        if schunk._sent_count < 2 or schunk._retransmit:
            continue
        mark = getattr(schunk, _RTX_AT, None)
        if mark is None or mark[1] != schunk._sent_count:
            mark = (now, schunk._sent_count)  # first seen since this retransmission
            setattr(schunk, _RTX_AT, mark)
        if now - mark[0] < patience:
            schunk._misses = _NO_STRIKES
            held = True
        elif schunk._misses < 0:
            schunk._misses = 0
    state.held_strikes += held


def _struck_by(sent: Any, sack: Any) -> Iterator[Any]:
    """The chunks of the sent queue this SACK may strike: its holes below its last block
    (all chunks up to that block when the blocks are not in order)."""
    cumulative = sack.cumulative_tsn
    ranges = sctp_sacks.blocks(cumulative, sack.gaps)
    if ranges is not None and sctp_sacks.consecutive(sent):
        yield from sctp_sacks.holes(sent, cumulative, ranges, ranges[-1][1])
        return
    last = (cumulative + sack.gaps[-1][1]) % rtcsctptransport.SCTP_TSN_MODULO
    for schunk in sent:
        if sctp_sacks.serial_gt(schunk.tsn, last):
            return  # above the last gap nothing is struck
        if sctp_sacks.serial_gt(schunk.tsn, cumulative):
            yield schunk


def enable(sctp: RTCSctpTransport, *, loss_response: bool = True) -> PathState | None:
    """Follow the path on this association; None when the pinned aiortc does not allow it."""
    if not install():
        return None
    state: PathState | None = getattr(sctp, _STATE, None)
    if state is None:
        state = PathState(epoch_start=time.monotonic())
        setattr(sctp, _STATE, state)
    state.loss_response = loss_response
    srtt = getattr(sctp, "_srtt", None)
    if isinstance(srtt, float):
        state.rtt = srtt
    return state


def state_of(sctp: Any) -> PathState | None:
    """The path state of an enabled association, else None."""
    state = getattr(sctp, _STATE, None)
    return state if isinstance(state, PathState) else None
