"""The sending side of aiortc's SCTP: a SACK handled in steps per gap, not per chunk.

The fifth adapter over aiortc internals (``sctp_acks`` is the receiving side's).
aiortc 1.16's ``_receive_sack_chunk`` walks its whole sent queue up to three times per
SACK (a set of every TSN the gap blocks cover, a pass for newly acknowledged chunks, a
pass striking the missing ones), each step with a Python-level serial-number compare.
The sent queue holds everything since the oldest chunk not yet cumulatively acked: on a
lossy path, most of the time, about one window. At 40 ms + 1 % loss with windows of a
few hundred packets that is over half of the sending connection process's CPU (py-spy,
``docs/performance.md``), and it grows with the window, so a larger window stops paying.

The replacement does what aiortc does, in the same order, with the same effects on
every chunk and counter, but uses what aiortc guarantees about its sent queue: it holds
consecutive TSNs, oldest first, so a TSN is found by its index, a gap block is a range
of indexes, and the chunks to strike are those in the holes between blocks. Chunks the
previous SACK's blocks already acknowledged are skipped; that memory is dropped
whenever it could be wrong (a T3 timeout resends acknowledged chunks, a SACK whose
blocks are not in order). What it cannot take on trust it hands to aiortc's own code:
SACKs whose blocks are out of order or overlap, and a sent queue that is not
consecutive.

Only transports that opt in (:func:`enable`) are affected. ``sctp_flight`` and
``sctp_path`` wrap ``_receive_sack_chunk`` too; :func:`install` must come first so this
is the innermost layer (both call it). ``tests/unit/test_sctp_sacks.py`` drives this
and aiortc's own handler with the same SACKs and compares every chunk and counter.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from aiortc import rtcsctptransport
from aiortc.rtcsctptransport import RTCSctpTransport

log = logging.getLogger(__name__)

_MODULO: Final = 1 << 32
_HALF: Final = 1 << 31
_STATE: Final = "_pxfer_sacks"
_NO_MEMORY: Final = ()
_installed = False
_original: Callable[[Any, Any], Awaitable[None]] | None = None


class SackState:
    """Per association: what lets a SACK skip the chunks the previous one acknowledged."""

    __slots__ = ("acked", "fallback", "fast", "resend_until", "resent_acked", "watch")

    def __init__(self) -> None:
        # The previous SACK's blocks as TSN ranges (None: no memory to trust).
        self.acked: tuple[tuple[int, int], ...] | None = None
        # After a T3 timeout every chunk up to this TSN may be resent acknowledged
        # (back in flight): no skipping until the cumulative TSN passes it.
        self.resend_until: int | None = None
        # Acknowledged chunks still marked for retransmission: aiortc resends them
        # anyway, and each SACK that covers them must take them out of flight again.
        self.watch: dict[int, Any] = {}
        self.resent_acked = 0  # such chunks a SACK took out of flight again
        self.fast = 0  # SACKs handled here
        self.fallback = 0  # SACKs handed to aiortc's own handler


def problems() -> list[str]:
    """What the installed aiortc lacks for this adapter (empty when all is well)."""
    found = []
    for name in (
        "_receive_sack_chunk", "_t3_expired", "_update_rto", "_maybe_abandon", "_flight_size_decrease",
        "_t3_cancel", "_t3_restart", "_update_advanced_peer_ack_point", "_data_channel_flush", "_transmit",
    ):  # fmt: skip
        if not callable(getattr(RTCSctpTransport, name, None)):
            found.append(f"aiortc RTCSctpTransport.{name} is missing")
    if found:
        return found
    names = set(inspect.unwrap(RTCSctpTransport._receive_sack_chunk).__code__.co_names)
    for attr in (
        "_last_sacked_tsn", "_sent_queue", "_flight_size", "_cwnd", "_ssthresh", "_partial_bytes_acked",
        "_fast_recovery_exit", "_fast_recovery_transmit", "_acked", "_misses", "_retransmit", "_book_size",
        "_sent_count", "_sent_time", "gaps", "cumulative_tsn",
    ):  # fmt: skip
        if attr not in names:
            found.append(f"aiortc's SACK handler no longer uses {attr}")
    for constant in ("USERDATA_MAX_LENGTH", "SCTP_TSN_MODULO"):
        if not hasattr(rtcsctptransport, constant):
            found.append(f"aiortc has no rtcsctptransport.{constant}")
    return found


def serial_gt(a: int, b: int) -> bool:
    """Serial-number a > b (RFC 1982) on TSNs: exactly aiortc's ``uint32_gt``, inline."""
    return a != b and (a - b) % _MODULO < _HALF


def blocks(cumulative: int, gaps: Any) -> list[tuple[int, int]] | None:
    """The gap blocks as offsets above ``cumulative``; None unless they are in order,
    disjoint and well formed (then aiortc's own handler is the one that knows)."""
    found: list[tuple[int, int]] = []
    floor = 1
    for gap in gaps:
        start, end = gap[0], gap[1]
        if start < floor or end < start:
            return None
        found.append((start, end))
        floor = end + 2  # blocks are separated by at least one missing TSN
    return found


def holes(sent: deque[Any], cumulative: int, ranges: list[tuple[int, int]], top: int) -> Iterator[Any]:
    """The chunks of ``sent`` (consecutive TSNs) above ``cumulative`` and at most
    ``top`` offsets above it that no block covers, oldest first. ``sent`` may still
    hold chunks at or below ``cumulative`` (before the SACK is applied)."""
    if not sent:
        return
    first = _offset_of_head(sent, cumulative)
    size = len(sent)
    low = 1
    for start, end in [*ranges, (top + 1, top + 1)]:
        for offset in range(max(low, first), min(start, top + 1)):
            if offset - first >= size:
                return
            yield sent[offset - first]
        low = end + 1
        if low > top:
            return


def _offset_of_head(sent: deque[Any], cumulative: int) -> int:
    """The oldest chunk's TSN less ``cumulative``, signed: 1 once the SACK is applied
    (more after abandoned chunks left the queue), 0 or less before."""
    head: int = sent[0].tsn
    return (head - cumulative + _HALF) % _MODULO - _HALF


def consecutive(sent: deque[Any]) -> bool:
    return not sent or (sent[-1].tsn - sent[0].tsn) % _MODULO == len(sent) - 1


async def _receive_sack(self: Any, chunk: Any, state: SackState) -> None:
    """aiortc's ``_receive_sack_chunk`` (1.16), in steps per gap block (module docstring)."""
    assert _original is not None
    cumulative: int = chunk.cumulative_tsn
    if serial_gt(self._last_sacked_tsn, cumulative):
        return
    ranges = blocks(cumulative, chunk.gaps) if chunk.gaps else []
    sent: deque[Any] = self._sent_queue
    if ranges is None or not consecutive(sent):
        state.acked = None
        state.fallback += 1
        await _original(self, chunk)
        return
    state.fast += 1
    received_time = time.time()
    self._last_sacked_tsn = cumulative
    cwnd_fully_utilized = self._flight_size >= self._cwnd
    done = 0
    done_bytes = 0

    # handle acknowledged data
    while sent and (cumulative == sent[0].tsn or serial_gt(cumulative, sent[0].tsn)):
        schunk = sent.popleft()
        done += 1
        if not schunk._acked:
            done_bytes += schunk._book_size
        self._flight_size_decrease(schunk)
        if done == 1 and schunk._sent_count == 1:
            self._update_rto(received_time - schunk._sent_time)

    # handle gap blocks
    loss = False
    if state.resend_until is not None and not serial_gt(state.resend_until, cumulative):
        state.resend_until = None
    if ranges:
        known = _known(state.acked, cumulative) if state.resend_until is None else []
        newly_acked = 0  # offset of the highest TSN newly acknowledged (aiortc's HTNA)
        first = _offset_of_head(sent, cumulative) if sent else 1  # see holes()
        size = len(sent)
        watch = state.watch
        for start, end in ranges:
            for offset in _minus(max(start, first), end, known):
                if offset - first >= size:
                    break
                schunk = sent[offset - first]
                if not schunk._acked:
                    done_bytes += schunk._book_size
                    schunk._acked = True
                    newly_acked = offset
                self._flight_size_decrease(schunk)
                if schunk._retransmit:
                    watch[schunk.tsn] = schunk
        if watch:
            _rewatch(self, state, cumulative, ranges)
        state.acked = tuple(((cumulative + s) % _MODULO, (cumulative + e) % _MODULO) for s, e in ranges)

        # strike missing chunks prior to HTNA
        for schunk in holes(sent, cumulative, ranges, newly_acked):
            schunk._misses += 1
            if schunk._misses == 3:
                schunk._misses = 0
                if not self._maybe_abandon(schunk):
                    schunk._retransmit = True
                schunk._acked = False
                self._flight_size_decrease(schunk)
                loss = True
    else:
        state.acked = _NO_MEMORY

    # adjust congestion window (aiortc's, unchanged)
    mtu = rtcsctptransport.USERDATA_MAX_LENGTH
    if self._fast_recovery_exit is None:
        if done and cwnd_fully_utilized:
            if self._cwnd <= self._ssthresh:
                self._cwnd += min(done_bytes, mtu)
            else:
                self._partial_bytes_acked += done_bytes
                if self._partial_bytes_acked >= self._cwnd:
                    self._partial_bytes_acked -= self._cwnd
                    self._cwnd += mtu
        if loss:
            self._ssthresh = max(self._cwnd // 2, 4 * mtu)
            self._cwnd = self._ssthresh
            self._partial_bytes_acked = 0
            self._fast_recovery_exit = sent[-1].tsn
            self._fast_recovery_transmit = True
    elif cumulative == self._fast_recovery_exit or serial_gt(cumulative, self._fast_recovery_exit):
        self._fast_recovery_exit = None

    if not sent:
        self._t3_cancel()
    elif done:
        self._t3_restart()

    self._update_advanced_peer_ack_point()
    await self._data_channel_flush()
    await self._transmit()


def _rewatch(sctp: Any, state: SackState, cumulative: int, ranges: list[tuple[int, int]]) -> None:
    """Take watched chunks this SACK covers out of flight (aiortc does so for every
    chunk a block covers; the skipped ones are only ever in flight if resent)."""
    watch = state.watch
    for tsn, schunk in list(watch.items()):
        offset = (tsn - cumulative) % _MODULO
        if offset == 0 or offset >= _HALF:
            del watch[tsn]  # cumulatively acknowledged: gone from the sent queue
            continue
        if any(s <= offset <= e for s, e in ranges):
            if schunk._in_flight:
                state.resent_acked += 1
                sctp._flight_size_decrease(schunk)
            if not schunk._retransmit:
                del watch[tsn]  # resent, and that copy is out of flight too


def _known(acked: tuple[tuple[int, int], ...] | None, cumulative: int) -> list[tuple[int, int]]:
    """The previous SACK's blocks as offsets above ``cumulative`` (what is still above it)."""
    if not acked:
        return []
    found = []
    for first, last in acked:
        s, e = (first - cumulative) % _MODULO, (last - cumulative) % _MODULO
        if e >= _HALF:  # wholly at or below the cumulative TSN now
            continue
        found.append((1 if s >= _HALF or s == 0 else s, e))
    return found


def _minus(start: int, end: int, known: list[tuple[int, int]]) -> Iterator[int]:
    """Offsets start..end that no range in ``known`` (sorted, disjoint) covers."""
    low = start
    for s, e in known:
        if e < low:
            continue
        if s > end:
            break
        yield from range(low, min(s, end + 1))
        low = max(low, e + 1)
        if low > end:
            return
    yield from range(low, end + 1)


def install() -> bool:
    """Make the fast handler aiortc's ``_receive_sack_chunk`` for enabled transports,
    and forget a transport's acked blocks on T3; idempotent. Must run before any other
    wrapper of ``_receive_sack_chunk`` is installed (it is their innermost layer)."""
    global _installed, _original
    if _installed:
        return True
    found = problems()
    if found:
        log.warning("SCTP SACK fast path unavailable: %s", "; ".join(found))
        return False
    original: Callable[[Any, Any], Awaitable[None]] = RTCSctpTransport._receive_sack_chunk
    expired: Callable[[Any], None] = RTCSctpTransport._t3_expired
    _original = original

    @functools.wraps(original)
    async def receive_sack_chunk(self: Any, chunk: Any) -> None:
        state: SackState | None = getattr(self, _STATE, None)
        if state is None:
            await original(self, chunk)
        else:
            await _receive_sack(self, chunk, state)

    @functools.wraps(expired)
    def t3_expired(self: Any) -> None:
        state: SackState | None = getattr(self, _STATE, None)
        if state is not None and self._sent_queue:
            state.resend_until = self._sent_queue[-1].tsn  # acknowledged chunks go out again
        expired(self)

    RTCSctpTransport._receive_sack_chunk = receive_sack_chunk  # type: ignore[method-assign]
    RTCSctpTransport._t3_expired = t3_expired  # type: ignore[method-assign]
    _installed = True
    return True


def enable(sctp: RTCSctpTransport) -> SackState | None:
    """Handle this association's SACKs here; None when the pinned aiortc does not allow it."""
    if not install():
        return None
    state: SackState | None = getattr(sctp, _STATE, None)
    if state is None:
        state = SackState()
        setattr(sctp, _STATE, state)
    return state
