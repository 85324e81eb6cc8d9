"""Read a ``--telemetry`` JSON-lines file into time series the bench can plot and fit.

The file holds ``sample`` records (memory and CPU of every process, ``t`` on the
recorder's clock: seconds since the recorder was created) and ``progress`` records
(``t`` in seconds since the first progress report), interleaved in the order they
were written, plus ``stall`` records and a final ``summary``. The two ``t`` origins
differ by the connection setup time, which the file does not state; the order of
the records bounds it (see :func:`clock_offset`), so memory can be drawn on the
progress clock: t = 0 is the first progress report, setup shows as negative t.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProgressPoint:
    t: float  # seconds since the first progress report
    bytes_done: int
    retransmits: int = 0


@dataclass(frozen=True)
class MemoryPoint:
    t: float  # on the progress clock (see clock_offset)
    sum_pss: int
    pss: dict[str, int]  # role -> PSS of the processes alive at this sample
    cpu: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds so far (user + system)


@dataclass
class Telemetry:
    progress: list[ProgressPoint] = field(default_factory=list)
    memory: list[MemoryPoint] = field(default_factory=list)
    stalls: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    offset: float = 0.0  # recorder clock minus progress clock

    @property
    def roles(self) -> list[str]:
        """Process roles in the order they first appear."""
        seen: dict[str, None] = {}
        for point in self.memory:
            for role in point.pss:
                seen.setdefault(role, None)
        return list(seen)


def parse_telemetry(lines: Iterable[str]) -> Telemetry:
    """Parse JSON lines; blank and undecodable lines (a run killed mid-write) are skipped."""
    records: list[dict[str, Any]] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    offset = clock_offset(records)
    telemetry = Telemetry(offset=offset)
    for record in records:
        kind = record.get("type")
        if kind == "progress":
            telemetry.progress.append(
                ProgressPoint(float(record["t"]), int(record["bytes_done"]), int(record.get("retransmits", 0)))
            )
        elif kind == "sample":
            alive = {
                role: int(proc.get("pss", 0))
                for role, proc in record.get("processes", {}).items()
                if not proc.get("gone", False)
            }
            cpu = {
                role: float(proc.get("cpu_user", 0.0)) + float(proc.get("cpu_system", 0.0))
                for role, proc in record.get("processes", {}).items()
            }
            t = round(float(record["t"]) - offset, 3)
            telemetry.memory.append(MemoryPoint(t, int(record["sum_pss"]), alive, cpu))
        elif kind == "stall":
            telemetry.stalls.append({k: v for k, v in record.items() if k != "type"})
        elif kind == "summary":
            telemetry.summary = {k: v for k, v in record.items() if k != "type"}
    return telemetry


def load_telemetry(path: str | Path) -> Telemetry:
    with open(path, encoding="utf-8") as f:
        return parse_telemetry(f)


def clock_offset(records: Sequence[dict[str, Any]]) -> float:
    """Recorder clock minus progress clock, from the order of the records.

    A progress record written after sample S and before sample S' was reported at
    a recorder time between S.t and S'.t, so ``S.t - p.t <= offset <= S'.t - p.t``.
    Every progress record narrows the interval; the middle of what is left is the
    estimate (within one progress interval's jitter). 0.0 without both kinds.
    """
    low: float | None = None
    high: float | None = None
    last_sample: float | None = None
    pending: list[float] = []  # progress t values since the last sample
    for record in records:
        kind = record.get("type")
        if kind == "sample":
            t = float(record["t"])
            for p in pending:
                high = t - p if high is None else min(high, t - p)
            pending.clear()
            last_sample = t
        elif kind == "progress":
            p = float(record["t"])
            pending.append(p)
            if last_sample is not None:
                low = last_sample - p if low is None else max(low, last_sample - p)
    if low is None and high is None:
        return 0.0
    if low is None:
        return round(float(high), 3)  # type: ignore[arg-type]
    if high is None:
        return round(low, 3)
    return round((low + high) / 2, 3)


def steady_rate(progress: Sequence[ProgressPoint], total: int, low: float = 0.1, high: float = 0.9) -> float | None:
    """Bytes per second as the least-squares slope of bytes over time, using the points
    between ``low`` and ``high`` of ``total`` (start-up and the tail left out). None with
    fewer than three points in that range."""
    if total <= 0:
        return None
    points = [p for p in progress if low * total <= p.bytes_done <= high * total]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(p.t for p in points) / n
    mean_b = sum(p.bytes_done for p in points) / n
    var = sum((p.t - mean_t) ** 2 for p in points)
    if var <= 0:
        return None
    cov = sum((p.t - mean_t) * (p.bytes_done - mean_b) for p in points)
    return cov / var


def second_half_rate(points: Iterable[tuple[float, int]], total: int) -> float | None:
    """Bytes per second over the second half of a transfer: from the first point at or
    past ``total / 2`` bytes to the first one at ``total``. ``points`` are (time, bytes)
    in time order on any one clock. None if either point is missing or they coincide."""
    half = end = None
    for t, done in points:
        if half is None and done >= total / 2:
            half = (t, done)
        if done >= total:
            end = (t, done)
            break
    if half is None or end is None or end[0] <= half[0]:
        return None
    return (end[1] - half[1]) / (end[0] - half[0])


def rate_series(progress: Sequence[ProgressPoint], window: float = 1.0) -> list[tuple[float, float]]:
    """``(t, bytes/s)`` with each rate taken over the last ``window`` seconds (or since
    the first point): a smoothed throughput curve for plots."""
    series: list[tuple[float, float]] = []
    start = 0
    for i, point in enumerate(progress):
        while start < i and point.t - progress[start].t > window:
            start += 1
        if start == i:
            if i > 0:
                start = i - 1
            else:
                continue
        first = progress[start]
        dt = point.t - first.t
        if dt > 0:
            series.append((point.t, (point.bytes_done - first.bytes_done) / dt))
    return series


def data_span(progress: Sequence[ProgressPoint], total: int) -> tuple[float, float] | None:
    """From the last report with no bytes to the first with all of them: the data phase."""
    start = next((p.t for p in reversed(progress) if p.bytes_done == 0), None)
    end = next((p.t for p in progress if p.bytes_done >= total), None)
    if start is None or end is None or end <= start:
        return None
    return start, end


def bytes_at(progress: Sequence[ProgressPoint], t: float) -> float:
    """Bytes done at time ``t``, interpolated linearly between progress points."""
    if not progress:
        return 0.0
    if t <= progress[0].t:
        return float(progress[0].bytes_done)
    for a, b in itertools.pairwise(progress):
        if a.t <= t <= b.t:
            if b.t == a.t:
                return float(b.bytes_done)
            return a.bytes_done + (b.bytes_done - a.bytes_done) * (t - a.t) / (b.t - a.t)
    return float(progress[-1].bytes_done)


def steady_cpu_per_gb(
    telemetry: Telemetry, total: int, low: float = 0.1, high: float = 0.9
) -> dict[str, float] | None:
    """CPU seconds per GB (10^9 bytes) of each process while the bytes went from ``low``
    to ``high`` of ``total``: start-up (imports, connecting) and tail left out, so it
    compares with a baseline measured only while data flowed. None if the window holds
    fewer than two samples or too few bytes."""
    progress = telemetry.progress
    t_low = next((p.t for p in progress if p.bytes_done >= low * total), None)
    t_high = next((p.t for p in progress if p.bytes_done >= high * total), None)
    if t_low is None or t_high is None:
        return None
    window = [m for m in telemetry.memory if t_low <= m.t <= t_high]
    if len(window) < 2:
        return None
    first, last = window[0], window[-1]
    moved = bytes_at(progress, last.t) - bytes_at(progress, first.t)
    if moved < 0.05 * total:
        return None
    return {
        role: round((last.cpu[role] - first.cpu.get(role, 0.0)) / (moved / 1e9), 2)
        for role in last.cpu
        if role in first.cpu
    }
