"""The receiving side of aiortc's SCTP: what arrived, kept as runs, not re-sorted per packet.

The fourth adapter over aiortc internals (after ``ice_probe``, ``sctp_flight`` and
``sctp_path``). aiortc 1.16 keeps the TSNs that arrived above the cumulative TSN in a
set, ``_sack_misordered``, and for every DATA chunk it receives sorts that set and
filters it element by element in Python (``_mark_received``); every SACK it sends
sorts it again and walks it once more to build the gap blocks (``_send_sack``). Both
are fine while nothing is lost. On a lossy path the set holds everything that arrived
since the oldest hole, about one window: at 40 ms + 1 % loss with a window of a few
hundred packets that is a few hundred Python-level steps per packet, twice, in the
process that must also carry the data (``docs/performance.md``).

Here the same facts are kept as a sorted list of runs (``[first, last]`` intervals of
received TSNs above the cumulative one), so a DATA chunk costs a bisection and a SACK
costs one step per gap block. The set stays exactly what aiortc keeps (its duplicate
test and FORWARD TSN handling read and rewrite it); the runs are rebuilt from it
whenever aiortc changed either behind our back (a FORWARD TSN, the INIT), which a
count and the cumulative TSN tell. The SACK sent is the one aiortc sends, with one
difference where aiortc is wrong: near the TSN wrap (2**32) aiortc sorts raw TSNs, so
its gap blocks come out of order; ours are in serial-number order (RFC 9260 3.3.4).

Only transports that opt in (:func:`enable`) are affected; :func:`problems` names what
this relies on, and ``tests/unit/test_sctp_acks.py`` checks the SACKs against aiortc's
own on the same arrivals and fails when the pinned aiortc changes shape.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiortc import rtcsctptransport
from aiortc.rtcsctptransport import RTCSctpTransport

from pipeline.connection.sctp_sacks import serial_gt

log = logging.getLogger(__name__)

_MODULO: Final = 1 << 32
_STATE: Final = "_pxfer_acks"
_installed = False


@dataclass
class Runs:
    """Received TSNs above the cumulative TSN, as sorted disjoint runs.

    Positions are offsets from ``base``, an unwrapped counter of the cumulative TSN,
    so a run never has to be renumbered when the cumulative TSN moves."""

    cumulative: int  # the wire TSN these runs were last synchronised with
    base: int = 0  # unwrapped cumulative TSN
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    count: int = 0  # TSNs held in runs (== len of aiortc's set when in step)

    @classmethod
    def of(cls, cumulative: int, received: set[int]) -> Runs:
        """Runs built from aiortc's own state (every TSN in ``received`` is above it)."""
        runs = cls(cumulative)
        for offset in sorted((tsn - cumulative) % _MODULO for tsn in received):
            runs._add(offset)
        return runs

    def _add(self, offset: int) -> None:
        """Record the TSN ``offset`` above the cumulative one (not yet held)."""
        u = self.base + offset
        i = bisect.bisect_right(self.starts, u)  # runs[i-1] starts at or below u
        joins_left = i > 0 and self.ends[i - 1] == u - 1
        joins_right = i < len(self.starts) and self.starts[i] == u + 1
        if joins_left and joins_right:
            self.ends[i - 1] = self.ends[i]
            del self.starts[i], self.ends[i]
        elif joins_left:
            self.ends[i - 1] = u
        elif joins_right:
            self.starts[i] = u
        else:
            self.starts.insert(i, u)
            self.ends.insert(i, u)
        self.count += 1

    def receive(self, tsn: int) -> int:
        """Record an arrival that is neither a duplicate nor at/below the cumulative TSN;
        return by how many TSNs the cumulative TSN advances (0: it made or grew a gap).
        The TSNs the advance swallows leave the runs (the caller drops them from its set)."""
        offset = (tsn - self.cumulative) % _MODULO
        if offset != 1:
            self._add(offset)
            return 0
        advance = 1
        if self.starts and self.starts[0] == self.base + 2:  # the hole below the first run closed
            advance = self.ends[0] - self.base
            self.count -= self.ends[0] - self.starts[0] + 1
            del self.starts[0], self.ends[0]
        self.base += advance
        self.cumulative = (self.cumulative + advance) % _MODULO
        return advance

    def gaps(self) -> list[tuple[int, int]]:
        """Gap ack blocks: (start, end) offsets from the cumulative TSN, in order."""
        base = self.base
        return [(s - base, e - base) for s, e in zip(self.starts, self.ends, strict=True)]


def problems() -> list[str]:
    """What the installed aiortc lacks for this adapter (empty when all is well)."""
    found = []
    for name in ("_mark_received", "_send_sack", "_send_chunk"):
        if not callable(getattr(RTCSctpTransport, name, None)):
            found.append(f"aiortc RTCSctpTransport.{name} is missing")
    if not found:
        names = set(RTCSctpTransport.__init__.__code__.co_names)
        names |= set(inspect.unwrap(RTCSctpTransport._send_sack).__code__.co_names)
        for attr in ("_last_received_tsn", "_sack_misordered", "_sack_duplicates", "_sack_needed", "_advertised_rwnd"):
            if attr not in names:
                found.append(f"aiortc RTCSctpTransport no longer uses {attr}")
    if not hasattr(rtcsctptransport, "SackChunk"):
        found.append("aiortc has no rtcsctptransport.SackChunk")
    return found


def _runs(sctp: Any, state: Runs) -> Runs:
    """``state``, or fresh runs when aiortc moved its own bookkeeping since."""
    received: set[int] = sctp._sack_misordered
    if state.cumulative == sctp._last_received_tsn and state.count == len(received):
        return state
    fresh = Runs.of(sctp._last_received_tsn, received)
    setattr(sctp, _STATE, fresh)
    return fresh


def install() -> bool:
    """Replace aiortc's per-packet bookkeeping for enabled transports; idempotent."""
    global _installed
    if _installed:
        return True
    found = problems()
    if found:
        log.warning("SCTP ack bookkeeping unavailable: %s", "; ".join(found))
        return False
    original_mark: Callable[[Any, int], bool] = RTCSctpTransport._mark_received
    original_sack: Callable[[Any], Awaitable[None]] = RTCSctpTransport._send_sack

    @functools.wraps(original_mark)
    def mark_received(self: Any, tsn: int) -> bool:
        state: Runs | None = getattr(self, _STATE, None)
        if state is None:
            return original_mark(self, tsn)
        received: set[int] = self._sack_misordered
        last: int = self._last_received_tsn
        if tsn == last or serial_gt(last, tsn) or tsn in received:  # a duplicate, as aiortc tells it
            self._sack_duplicates.append(tsn)
            return True
        runs = _runs(self, state)
        advance = runs.receive(tsn)
        if advance:
            for k in range(2, advance + 1):  # the run the arrival joined to the cumulative TSN
                received.discard((last + k) % _MODULO)
            last = self._last_received_tsn = runs.cumulative
        else:
            received.add(tsn)
        if self._sack_duplicates:  # aiortc keeps only those above the cumulative TSN
            self._sack_duplicates = [x for x in self._sack_duplicates if serial_gt(x, last)]
        return False

    @functools.wraps(original_sack)
    async def send_sack(self: Any) -> None:
        state: Runs | None = getattr(self, _STATE, None)
        if state is None:
            await original_sack(self)
            return
        sack = rtcsctptransport.SackChunk()
        sack.cumulative_tsn = self._last_received_tsn
        sack.advertised_rwnd = max(0, self._advertised_rwnd)
        sack.duplicates = self._sack_duplicates[:]
        sack.gaps = _runs(self, state).gaps()
        await self._send_chunk(sack)
        self._sack_duplicates.clear()
        self._sack_needed = False

    RTCSctpTransport._mark_received = mark_received  # type: ignore[method-assign]
    RTCSctpTransport._send_sack = send_sack  # type: ignore[method-assign]
    _installed = True
    return True


def enable(sctp: RTCSctpTransport) -> bool:
    """Keep this association's received TSNs as runs; False when aiortc does not allow it."""
    if not install():
        return False
    if getattr(sctp, _STATE, None) is None:
        last = getattr(sctp, "_last_received_tsn", None)
        # Before the INIT there is no cumulative TSN yet: the first _runs() call builds them.
        setattr(sctp, _STATE, Runs(last if isinstance(last, int) else -1, count=-1))
    return True
