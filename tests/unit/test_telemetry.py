"""Telemetry: per-process PSS/USS/RSS and CPU from real child processes, stalls and
throughput from synthetic progress with explicit timestamps."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from pipeline.telemetry import MAX_SERIES_POINTS, ProcessSampler, Sample, TelemetryRecorder

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PSS is Linux-only")


def spawn(code: str) -> subprocess.Popen[str]:
    """A child that runs ``code``, prints "ready" and sleeps until killed."""
    script = f"{code}\nimport sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_pss_between_uss_and_rss_and_sum_is_sum_of_pss(
    children: list[subprocess.Popen[str]],
) -> None:
    children += [spawn("buf = bytearray(8 * 1024 * 1024)"), spawn("pass")]
    sampler = ProcessSampler(
        {"reader": children[0].pid, "hasher": children[1].pid, "supervisor": os.getpid()}
    )
    sample = sampler.sample()
    assert set(sample.processes) == {"reader", "hasher", "supervisor"}
    for p in sample.processes.values():
        assert not p.gone and not p.pss_is_rss
        assert p.uss is not None
        assert 0 < p.uss <= p.pss <= p.rss
    assert sample.sum_pss == sum(p.pss for p in sample.processes.values())
    # The 8 MiB buffer is private memory of the reader.
    assert sample.processes["reader"].uss - sample.processes["hasher"].uss > 6 * MiB  # type: ignore[operator]


def test_shared_pages_are_split_by_pss_not_counted_twice(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    shared = tmp_path / "ring"
    shared.write_bytes(os.urandom(32 * MiB))
    touch = (
        "import mmap\n"
        f"f = open({str(shared)!r}, 'rb')\n"
        "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
        "total = sum(m[i] for i in range(0, len(m), 4096))\n"
    )
    children += [spawn(touch), spawn(touch)]
    sample = ProcessSampler({"a": children[0].pid, "b": children[1].pid}).sample()
    a, b = sample.processes["a"], sample.processes["b"]
    # Each maps all 32 MiB: RSS counts them in full, PSS half each.
    assert a.rss - a.pss > 12 * MiB and b.rss - b.pss > 12 * MiB
    assert sample.sum_pss < a.rss + b.rss - 24 * MiB


def test_dead_zombie_and_missing_processes_are_gone_not_errors(
    children: list[subprocess.Popen[str]],
) -> None:
    children += [spawn("x = sum(range(3_000_000))"), spawn("pass")]
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    sampler = ProcessSampler(
        {"connection": children[0].pid, "writer": children[1].pid, "never": reaped.pid}
    )
    alive = sampler.sample()
    assert alive.gone == ["never"]
    cpu_before = alive.processes["connection"].cpu_seconds
    assert cpu_before > 0

    children[0].kill()
    children[0].wait()  # reaped: the pid no longer exists
    children[1].kill()  # not reaped: a zombie until the fixture waits
    _wait_zombie(children[1].pid)

    after = sampler.sample()
    assert sorted(after.gone) == ["connection", "never", "writer"]
    assert after.sum_pss == 0
    gone = after.processes["connection"]
    assert gone.pss == gone.rss == 0
    assert gone.cpu_seconds == cpu_before  # last known CPU is kept


def _wait_zombie(pid: int) -> None:
    proc = psutil.Process(pid)
    for _ in range(500):
        if proc.status() == psutil.STATUS_ZOMBIE:
            return
        threading.Event().wait(0.01)
    raise AssertionError("child did not become a zombie")


def test_pss_unreadable_falls_back_to_rss_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: psutil.Process) -> None:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", denied)
    p = ProcessSampler({"self": os.getpid()}).sample().processes["self"]
    assert p.pss_is_rss and p.pss == p.rss > 0 and p.uss is None


# -- recorder: stalls and throughput (synthetic time) ----------------------------------


def recorder(tmp_path: Path | None = None) -> TelemetryRecorder:
    path = str(tmp_path / "telemetry.jsonl") if tmp_path else None
    return TelemetryRecorder(ProcessSampler({"self": os.getpid()}), interval=0.05, path=path)


def feed(rec: TelemetryRecorder, times: list[float], counts: list[int]) -> None:
    for now, done in zip(times, counts, strict=True):
        rec.record_progress(
            now, done, frames_sent=done // 100, retransmits=0, buffered_amount=0, window_in_use=4
        )


def test_stall_is_a_second_or_more_without_new_bytes() -> None:
    rec = recorder()
    t = [100 + i * 0.1 for i in range(60)]
    # Progress until t=102.0, nothing until t=103.5, a 0.9 s pause from t=104.0.
    counts = []
    done = 0
    for now in t:
        if now < 102.0 or 103.5 <= now < 104.0 or now >= 104.75:
            done += 1000
        counts.append(done)
    feed(rec, t, counts)
    assert rec.current_stall(105.95) == 0.0
    [stall] = rec.stalls
    assert stall.start == pytest.approx(1.9)  # last increase at t=101.9
    assert stall.duration == pytest.approx(1.6)
    assert stall.bytes_done == counts[19]
    summary = rec.summary()
    assert summary["stall_count"] == 1
    assert summary["total_bytes"] == done


def test_stall_open_at_the_end_is_recorded_and_live_stall_is_visible() -> None:
    rec = recorder()
    feed(rec, [0.0, 0.5, 1.0], [10, 20, 30])
    assert rec.current_stall(1.5) == 0.0
    assert rec.current_stall(2.2) == pytest.approx(1.2)
    rec.record_progress(3.0, 30, 3, 1, 0, 4)  # still no new bytes
    rec.end_transfer(4.0)
    [stall] = rec.stalls
    assert stall.start == pytest.approx(1.0)
    assert stall.duration == pytest.approx(3.0)
    rec.record_progress(9.0, 30, 3, 1, 0, 4)  # after the end: ignored
    assert len(rec.stalls) == 1
    assert rec.current_stall(20.0) == 0.0


def test_throughput_series_is_downsampled_and_correct() -> None:
    rec = recorder()
    rate = 10 * MiB
    times = [i * 0.2 for i in range(5000)]  # 1000 s
    feed(rec, times, [int(rate * t) for t in times])
    summary = rec.summary()
    series = summary["throughput"]
    assert 100 <= len(series) <= MAX_SERIES_POINTS
    assert all(point["bytes_per_s"] == pytest.approx(rate, rel=0.01) for point in series)
    assert series[-1]["t"] == pytest.approx(999.8)
    assert summary["average_bytes_per_s"] == pytest.approx(rate, rel=0.01)
    assert summary["stall_count"] == 0


def test_recorder_thread_samples_writes_json_lines_and_stops(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    with rec:
        rec.sample_now()
        feed(rec, [0.0, 0.2, 2.0], [0, 100, 100])
        rec.end_transfer(2.0)  # synthetic time: stop() would end it on the real clock
        threading.Event().wait(0.15)  # let the thread take a few samples
    assert rec._thread is not None and not rec._thread.is_alive()
    rec.stop()  # idempotent

    lines = [
        msgspec.json.decode(line)
        for line in (tmp_path / "telemetry.jsonl").read_bytes().splitlines()
    ]
    kinds = [line["type"] for line in lines]
    assert kinds.count("sample") >= 3
    assert kinds.count("progress") == 3
    assert kinds.count("stall") == 1
    assert kinds[-1] == "summary"
    summary = lines[-1]
    own = summary["processes"]["self"]
    assert own["peak_pss"] > 0 and own["peak_pss"] <= own["peak_rss"]
    assert summary["peak_sum_pss"] >= own["peak_pss"]
    assert own["cpu_seconds"] > 0
    assert summary["stalls"] == [{"start": 0.2, "duration": pytest.approx(1.8), "bytes_done": 100}]
    assert summary == {**rec.summary(), "type": "summary"}


def test_progress_from_many_threads_while_sampling() -> None:
    rec = recorder()

    def report(offset: int) -> None:
        for i in range(500):
            rec.record_progress(i * 0.01, i * 10 + offset, i, 0, i, 1)

    with rec:
        workers = [threading.Thread(target=report, args=(k,)) for k in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    summary = rec.summary()
    assert summary["total_bytes"] == 499 * 10 + 3
    assert summary["peak_buffered_amount"] == 499
    assert summary["sampler_error"] is None


def test_recorders_share_no_state() -> None:
    a, b = recorder(), recorder()
    feed(a, [0.0, 3.0], [0, 0])
    a.end_transfer(3.0)
    assert len(a.stalls) == 1 and b.stalls == []
    assert b.summary()["total_bytes"] == 0


def test_a_failing_sampler_is_reported_not_raised_from_stop() -> None:
    class Broken(ProcessSampler):
        def sample(self) -> Sample:
            raise RuntimeError("proc unreadable")

    rec = TelemetryRecorder(Broken({}), interval=0.01)
    rec.start()
    rec.stop()  # session cleanup must not fail because telemetry did
    assert rec.summary()["sampler_error"] == "RuntimeError: proc unreadable"
