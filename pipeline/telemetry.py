"""Memory, CPU and progress telemetry of one session's pipeline (Appendix A.4).

Memory is reported per process as PSS (proportional set size: each shared page is
split between the processes that map it), and the pipeline's total is ΣPSS. RSS is
recorded per process for reference but never summed: the shared-memory ring is
mapped by every worker, and ΣRSS would count it once per process.

:class:`ProcessSampler` reads the processes; :class:`TelemetryRecorder` samples
them from a daemon thread, takes progress reports from its owner, finds stalls
and writes JSON lines. Progress and stall logic take ``now`` as an argument (same
clock as the recorder's ``clock``, ``time.monotonic`` by default), so tests drive
them without sleeping.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any, Final

import msgspec
import psutil  # type: ignore[import-untyped]  # no types-psutil in requirements.lock

__all__ = ["ProcessSample", "ProcessSampler", "Sample", "Stall", "TelemetryRecorder"]

STALL_THRESHOLD: Final = 1.0  # seconds without progress that count as a stall (A.4)
MAX_SERIES_POINTS: Final = 200
# Progress points closer together than this are not kept for the throughput series
# (the last one is always kept for the totals): bounded memory for hours-long runs.
PROGRESS_RESOLUTION: Final = 0.1


class ProcessSample(msgspec.Struct, frozen=True, kw_only=True):
    """One process at one instant. Memory in bytes; CPU in seconds since it started."""

    role: str
    pid: int
    gone: bool
    pss: int = 0
    uss: int | None = None
    rss: int = 0
    # True when PSS could not be read (not Linux, or not our process) and ``pss``
    # holds RSS instead: an over-estimate for processes that share memory.
    pss_is_rss: bool = False
    cpu_user: float = 0.0
    cpu_system: float = 0.0

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user + self.cpu_system


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    t: float  # sampler clock
    processes: dict[str, ProcessSample]
    sum_pss: int  # over the processes still alive

    @property
    def gone(self) -> list[str]:
        return [role for role, p in self.processes.items() if p.gone]


class Stall(msgspec.Struct, frozen=True, kw_only=True):
    start: float  # seconds since the first progress report
    duration: float
    bytes_done: int  # where the transfer stood


class ProcessSampler:
    """Reads memory and CPU of a fixed set of processes, ``role -> pid``.

    A process that has exited (or is a zombie, or whose pid was reused) is reported
    with ``gone=True`` and its last known CPU times; sampling never raises for it.
    Not thread-safe by itself; :class:`TelemetryRecorder` serialises access.
    """

    def __init__(self, pids: Mapping[str, int], clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._procs: dict[str, tuple[int, Any]] = {}
        self._last: dict[str, ProcessSample] = {}
        for role, pid in pids.items():
            self.track(role, pid)

    def track(self, role: str, pid: int) -> None:
        """Add a process (or replace the one in ``role``, e.g. a restarted worker)."""
        try:
            proc: Any = psutil.Process(pid)
        except psutil.NoSuchProcess:
            proc = None
        self._procs[role] = (pid, proc)
        self._last.pop(role, None)

    @property
    def roles(self) -> dict[str, int]:
        return {role: pid for role, (pid, _) in self._procs.items()}

    def sample(self) -> Sample:
        processes = {
            role: self._sample_one(role, pid, proc) for role, (pid, proc) in self._procs.items()
        }
        total = sum(p.pss for p in processes.values() if not p.gone)
        return Sample(t=self._clock(), processes=processes, sum_pss=total)

    def _sample_one(self, role: str, pid: int, proc: Any) -> ProcessSample:
        last = self._last.get(role)
        gone = ProcessSample(
            role=role,
            pid=pid,
            gone=True,
            cpu_user=last.cpu_user if last else 0.0,
            cpu_system=last.cpu_system if last else 0.0,
        )
        if proc is None:
            return gone
        try:
            # is_running() also detects a reused pid (it compares creation times).
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return gone
            with proc.oneshot():
                cpu = proc.cpu_times()
                try:
                    full = proc.memory_full_info()
                    rss, uss = int(full.rss), int(full.uss)
                    pss, estimated = (int(full.pss), False) if hasattr(full, "pss") else (rss, True)
                except psutil.AccessDenied:
                    rss, uss = int(proc.memory_info().rss), None
                    pss, estimated = rss, True
        except psutil.NoSuchProcess:  # includes ZombieProcess
            return gone
        current = ProcessSample(
            role=role,
            pid=pid,
            gone=False,
            pss=pss,
            uss=uss,
            rss=rss,
            pss_is_rss=estimated,
            cpu_user=float(cpu.user),
            cpu_system=float(cpu.system),
        )
        self._last[role] = current
        return current


class _ProcessPeaks:
    """Peaks and CPU of one role; a role re-tracked to a new pid (a restarted worker)
    keeps its memory peaks and adds up the CPU of every incarnation."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_pss = 0
        self.peak_uss: int | None = None
        self.peak_rss = 0
        self.pss_is_rss = False
        self.cpu_user = 0.0
        self.cpu_system = 0.0
        self._earlier_user = 0.0  # CPU of earlier incarnations
        self._earlier_system = 0.0
        self.gone = False

    def update(self, p: ProcessSample) -> None:
        if p.pid != self.pid:
            self._earlier_user, self._earlier_system = self.cpu_user, self.cpu_system
            self.pid = p.pid
        self.gone = p.gone
        # A gone process reports its last known CPU times (or 0 if never seen alive).
        self.cpu_user = max(self.cpu_user, self._earlier_user + p.cpu_user)
        self.cpu_system = max(self.cpu_system, self._earlier_system + p.cpu_system)
        if p.gone:
            return
        self.peak_pss = max(self.peak_pss, p.pss)
        self.peak_rss = max(self.peak_rss, p.rss)
        if p.uss is not None:
            self.peak_uss = max(self.peak_uss or 0, p.uss)
        self.pss_is_rss = self.pss_is_rss or p.pss_is_rss

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "peak_pss": self.peak_pss,
            "peak_uss": self.peak_uss,
            "peak_rss": self.peak_rss,
            "pss_is_rss": self.pss_is_rss,
            "cpu_user": round(self.cpu_user, 3),
            "cpu_system": round(self.cpu_system, 3),
            "cpu_seconds": round(self.cpu_user + self.cpu_system, 3),
            "gone": self.gone,
        }


class TelemetryRecorder:
    """Samples a :class:`ProcessSampler` every ``interval`` s in a daemon thread and
    collects progress reports; ``summary()`` is what the session report shows.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The recorder
    owns the JSON-lines file at ``path`` (one object per line, ``"type"`` one of
    ``sample``, ``progress``, ``stall``, ``summary``); it is closed by ``stop()``.

    A stall is a period of at least ``stall_threshold`` s in which ``bytes_done``
    did not increase while the transfer was active: from the first
    :meth:`record_progress` until :meth:`end_transfer` (or ``stop()``).
    """

    def __init__(
        self,
        sampler: ProcessSampler,
        *,
        interval: float = 1.0,
        path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        stall_threshold: float = STALL_THRESHOLD,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._sampler = sampler
        self._interval = interval
        self._path = path
        self._clock = clock
        self._stall_threshold = stall_threshold
        self._lock = threading.Lock()  # progress, peaks, stalls, file
        self._sampler_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[bytes] | None = None
        self._encoder = msgspec.json.Encoder()
        self._t0 = clock()
        self._stopped = False
        self._sampler_error: str | None = None
        # memory
        self._samples = 0
        self._peaks: dict[str, _ProcessPeaks] = {}
        self._peak_sum_pss = 0
        # progress (times are the owner's `now`)
        self._first_now: float | None = None
        self._last_now: float | None = None
        self._ended_at: float | None = None
        self._series_t: list[float] = []
        self._series_bytes: list[int] = []
        self._bytes_done = 0
        self._frames_sent = 0
        self._retransmits = 0
        self._peak_buffered = 0
        self._peak_window = 0
        self._last_increase: float | None = None
        self._stalls: list[Stall] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("TelemetryRecorder already started")
        if self._path is not None:
            self._file = open(self._path, "wb")  # noqa: SIM115 - closed by stop()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    def stop(self, now: float | None = None) -> None:
        """End the transfer (at ``now``), join the thread, take a last sample,
        write the summary line and close the file. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.end_transfer(self._clock() if now is None else now)
            try:
                self.sample_now()
            except Exception as exc:  # stop() runs in session cleanup: never mask its cause
                self._sampler_error = self._sampler_error or f"{type(exc).__name__}: {exc}"
            if self._file is not None:
                summary = self.summary()
                with self._lock:
                    self._write({"type": "summary", **summary})
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> TelemetryRecorder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def track(self, role: str, pid: int) -> None:
        """Start sampling another process (e.g. a worker spawned after start)."""
        with self._sampler_lock:
            self._sampler.track(role, pid)

    # -- memory ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self.sample_now()
            except Exception as exc:  # keep the session alive; the summary says why
                self._sampler_error = f"{type(exc).__name__}: {exc}"
                return
            if self._stop_event.wait(self._interval):
                return

    def sample_now(self) -> Sample:
        """Take one sample immediately (also used by the thread)."""
        # Reading /proc takes a few ms per process: not under the lock that
        # record_progress (the owner's event loop) needs.
        with self._sampler_lock:
            sample = self._sampler.sample()
        with self._lock:
            self._samples += 1
            for role, proc in sample.processes.items():
                peaks = self._peaks.get(role)
                if peaks is None:
                    peaks = self._peaks[role] = _ProcessPeaks(proc.pid)
                peaks.update(proc)
            self._peak_sum_pss = max(self._peak_sum_pss, sample.sum_pss)
            if self._file is not None:
                self._write(
                    {
                        "type": "sample",
                        "t": round(self._clock() - self._t0, 3),
                        "sum_pss": sample.sum_pss,
                        "processes": sample.processes,
                    }
                )
                self._file.flush()
        return sample

    # -- progress ----------------------------------------------------------

    def record_progress(
        self,
        now: float,
        bytes_done: int,
        frames_sent: int,
        retransmits: int,
        buffered_amount: int,
        window_in_use: int,
    ) -> None:
        """Report the transfer's counters at time ``now``; thread-safe."""
        with self._lock:
            if self._first_now is None:
                self._first_now = now
                self._last_increase = now
            if self._ended_at is not None:
                return
            if bytes_done > self._bytes_done:
                self._close_stall(now)
                self._last_increase = now
            self._bytes_done = max(self._bytes_done, bytes_done)
            self._frames_sent = frames_sent
            self._retransmits = retransmits
            self._peak_buffered = max(self._peak_buffered, buffered_amount)
            self._peak_window = max(self._peak_window, window_in_use)
            self._last_now = now
            keep = not self._series_t or now - self._series_t[-1] >= PROGRESS_RESOLUTION
            if keep:
                self._series_t.append(now)
                self._series_bytes.append(self._bytes_done)
                self._write(
                    {
                        "type": "progress",
                        "t": round(now - self._first_now, 3),
                        "bytes_done": bytes_done,
                        "frames_sent": frames_sent,
                        "retransmits": retransmits,
                        "buffered_amount": buffered_amount,
                        "window_in_use": window_in_use,
                    }
                )

    def end_transfer(self, now: float) -> None:
        """The transfer is over (any outcome): a stall still open at ``now`` is recorded,
        and no new one can start."""
        with self._lock:
            if self._first_now is None or self._ended_at is not None:
                return
            self._close_stall(now)
            self._ended_at = now
            self._last_now = max(self._last_now or now, now)

    def current_stall(self, now: float) -> float:
        """Seconds the transfer has been without progress at ``now`` if that counts as
        a stall already, else 0.0 (for live display)."""
        with self._lock:
            if self._last_increase is None or self._ended_at is not None:
                return 0.0
            idle = now - self._last_increase
            return idle if idle >= self._stall_threshold else 0.0

    def _close_stall(self, now: float) -> None:
        assert self._last_increase is not None and self._first_now is not None
        idle = now - self._last_increase
        if idle >= self._stall_threshold:
            stall = Stall(
                start=round(self._last_increase - self._first_now, 3),
                duration=round(idle, 3),
                bytes_done=self._bytes_done,
            )
            self._stalls.append(stall)
            self._write({"type": "stall", **msgspec.structs.asdict(stall)})

    # -- results -----------------------------------------------------------

    @property
    def stalls(self) -> list[Stall]:
        with self._lock:
            return list(self._stalls)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            duration = 0.0
            if self._first_now is not None and self._last_now is not None:
                duration = self._last_now - self._first_now
            return {
                "samples": self._samples,
                "processes": {role: p.as_dict() for role, p in self._peaks.items()},
                "peak_sum_pss": self._peak_sum_pss,
                "total_bytes": self._bytes_done,
                "frames_sent": self._frames_sent,
                "retransmits": self._retransmits,
                "peak_buffered_amount": self._peak_buffered,
                "peak_window_in_use": self._peak_window,
                "duration": round(duration, 3),
                "average_bytes_per_s": round(self._bytes_done / duration, 1)
                if duration > 0
                else None,
                "stall_count": len(self._stalls),
                "stalled_seconds": round(sum(s.duration for s in self._stalls), 3),
                "stalls": [msgspec.structs.asdict(s) for s in self._stalls],
                "throughput": self._throughput_series(),
                "sampler_error": self._sampler_error,
            }

    def _throughput_series(self) -> list[dict[str, float]]:
        """≤ MAX_SERIES_POINTS rates, each over an equal slice of the transfer's time."""
        times, counts = list(self._series_t), list(self._series_bytes)
        if self._last_now is not None and times and self._last_now > times[-1]:
            times.append(self._last_now)
            counts.append(self._bytes_done)
        if len(times) < 2 or self._first_now is None:
            return []
        t0, span = times[0], times[-1] - times[0]
        steps = min(MAX_SERIES_POINTS, len(times) - 1)
        picked: list[int] = []
        for k in range(steps + 1):
            target = t0 + span * k / steps
            index = len(times) - 1 if k == steps else bisect.bisect_right(times, target) - 1
            if not picked or index > picked[-1]:
                picked.append(index)
        series: list[dict[str, float]] = []
        for a, b in itertools.pairwise(picked):
            dt = times[b] - times[a]
            series.append(
                {
                    "t": round(times[b] - self._first_now, 3),
                    "bytes_per_s": round((counts[b] - counts[a]) / dt, 1) if dt > 0 else 0.0,
                    "bytes_done": counts[b],
                }
            )
        return series

    def _write(self, record: dict[str, Any]) -> None:
        # Caller holds the lock.
        if self._file is not None:
            self._file.write(self._encoder.encode(record))
            self._file.write(b"\n")
