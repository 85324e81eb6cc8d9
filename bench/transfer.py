"""One pipeline-send → pipeline-receive transfer as a user runs it, and what it measured.

The CLIs run as separate processes through tests/cli_harness.py (embedded
signaling on a free port, ``--yes`` on the receiver), each with ``--json`` and
``--telemetry``; an optional YAML config goes to both sides. Logs, summaries and
telemetry stay in the run's directory under bench/results/; the received files go
to a temporary directory that is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.series import Telemetry, load_telemetry, steady_cpu_per_gb, steady_rate
from tests.cli_harness import Launcher, Proc, start_pair

SIDES = ("sender", "receiver")
# No new byte on the receiver for this long = hung. The pipeline's own watchdog only
# runs while data is outstanding, so a session whose receiver lost the sender's first
# frame (it can arrive before the receiver listens) waits forever; the bench must not.
# The first byte normally comes 2-3 s after the receiver starts.
HANG_AFTER = 45.0
HANG_BEFORE_FIRST_BYTE = 20.0
POLL = 0.5


class ProgressWatch:
    """Follows a telemetry file as it grows; ``idle(now)`` is how long bytes_done has
    not changed (counted from the watch's creation before the first record)."""

    def __init__(self, path: Path, now: float) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.bytes_done = -1
        self._changed_at = now

    def poll(self, now: float) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b'{"type":"progress"'):
                try:
                    done = int(json.loads(line)["bytes_done"])
                except (ValueError, KeyError):
                    continue
                if done != self.bytes_done:
                    self.bytes_done, self._changed_at = done, now

    def idle(self, now: float) -> float:
        return now - self._changed_at


@dataclass
class TransferRun:
    label: str
    run_dir: Path
    total_bytes: int
    files: int
    config: dict[str, Any]  # dotted key -> value given to both sides ({} = defaults)
    ok: bool = False
    error: str | None = None
    hung: bool = False
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end
    wall_s: float = 0.0  # sender process started -> both exited
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    telemetry: dict[str, Telemetry] = field(default_factory=dict)

    def telemetry_path(self, side: str) -> Path:
        return self.run_dir / f"{side}.telemetry.jsonl"


def nested(config: dict[str, Any]) -> dict[str, Any]:
    """``{"transfer.window": 64}`` -> ``{"transfer": {"window": 64}}`` (the YAML layout)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def run_transfer(
    label: str,
    paths: Sequence[Path],
    total_bytes: int,
    files: int,
    run_dir: Path,
    scratch: Path,
    *,
    config: dict[str, Any] | None = None,
    timeout: float | None = None,
    while_running: Callable[[TransferRun, Proc, Proc], None] | None = None,
    start: Callable[..., tuple[Proc, Proc]] = start_pair,
) -> TransferRun:
    """Send ``paths`` (``total_bytes`` in ``files`` files) and collect the outcome.

    Never raises for a failed transfer: ``ok`` is False and ``error`` says why.
    ``while_running`` is called once both processes are up (the profiler hooks in there).
    ``start`` starts the two CLIs, called like ``tests.cli_harness.start_pair`` (the
    default: both on this machine); another one (the network lab's) must add the
    processes it starts to the launcher, which stops whatever is left.
    """
    config = dict(config or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    run = TransferRun(label, run_dir, total_bytes, files, config)
    extra: list[str] = []
    if config:
        config_path = run_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(nested(config), sort_keys=True))
        extra += ["--config", str(config_path)]
    out = scratch / f"received-{label}"
    if timeout is None:
        timeout = 120 + total_bytes / 2e6  # generous: 2 MB/s would be a disaster, not noise
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    try:
        with Launcher(run_dir) as launcher:
            sender, receiver = start(
                launcher,
                paths,
                out,
                sender_extra=[*extra, "--telemetry", str(run.telemetry_path("sender"))],
                receiver_extra=["--yes", *extra, "--telemetry", str(run.telemetry_path("receiver"))],
            )
            if while_running is not None:
                while_running(run, sender, receiver)
            _wait_or_hang(run, sender, receiver, started + timeout)
            finished = {"sender": sender.wait(10), "receiver": receiver.wait(10)}
        run.wall_s = round(time.monotonic() - started, 3)
        problems = []
        for side, done in finished.items():
            if done.summary is not None:
                run.summaries[side] = done.summary
            outcome = done.summary.get("outcome") if done.summary else None
            if done.returncode != 0 or outcome != "completed":
                tail = done.stderr.strip().splitlines()[-3:]
                problems.append(f"{side} exit {done.returncode}, outcome {outcome}: {' / '.join(tail)}")
        run.ok = not problems
        run.error = "; ".join(problems) or None
    except AssertionError as exc:  # ours and the harness's timeouts
        lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("---")]
        run.error = lines[0] + (f" ... {lines[-1].strip()}" if len(lines) > 1 else "")
        run.hung = run.error.startswith("hung")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        run.load = (round(load_start, 2), round(os.getloadavg()[0], 2))
    for side in SIDES:
        path = run.telemetry_path(side)
        if path.exists():
            run.telemetry[side] = load_telemetry(path)
    return run


def _wait_or_hang(run: TransferRun, sender: Proc, receiver: Proc, deadline: float) -> None:
    """Until both CLIs exit; raises AssertionError (as the harness does) on a hang or
    the deadline. The Launcher kills whatever is left."""
    watch = ProgressWatch(run.telemetry_path("receiver"), time.monotonic())
    while sender.popen.poll() is None or receiver.popen.poll() is None:
        now = time.monotonic()
        watch.poll(now)
        limit = HANG_BEFORE_FIRST_BYTE if watch.bytes_done <= 0 else HANG_AFTER
        if watch.idle(now) > limit:
            where = "before the first byte" if watch.bytes_done <= 0 else f"at {watch.bytes_done} bytes"
            raise AssertionError(f"hung: no progress for {limit:.0f} s {where}")
        if now > deadline:
            raise AssertionError(f"not finished before the deadline ({watch.bytes_done} bytes done)")
        time.sleep(POLL)


def side_metrics(summary: dict[str, Any], total_bytes: int) -> dict[str, Any]:
    """Memory, CPU and stalls of one side, from its --json summary."""
    processes = summary.get("memory", {}).get("processes", {})
    gb = total_bytes / 1e9
    cpu = {role: float(p.get("cpu_seconds", 0.0)) for role, p in processes.items()}
    stalls = summary.get("stalls", [])
    return {
        "peak_sum_pss": summary.get("memory", {}).get("peak_sum_pss"),
        "peak_pss": {role: p.get("peak_pss") for role, p in processes.items()},
        "cpu_s": {role: round(v, 3) for role, v in cpu.items()},
        "cpu_s_per_gb": {role: round(v / gb, 2) for role, v in cpu.items()} if gb > 0 else {},
        "cpu_s_per_gb_total": round(sum(cpu.values()) / gb, 2) if gb > 0 else None,
        "stall_count": summary.get("stall_count", len(stalls)),
        # A stall before the first byte is the connection's start, not a hiccup in the flow.
        "stalls_mid_transfer": sum(1 for s in stalls if s.get("bytes_done", 0) > 0),
        "stalled_seconds": round(sum(float(s.get("duration", 0.0)) for s in stalls), 3),
        "duration_s": summary.get("duration_s"),
    }


def transfer_metrics(run: TransferRun) -> dict[str, Any]:
    """The figures a scenario reports for one run (JSON-ready)."""
    metrics: dict[str, Any] = {
        "label": run.label,
        "ok": run.ok,
        "error": run.error,
        "hung": run.hung,
        "bytes": run.total_bytes,
        "files": run.files,
        "config": run.config,
        "wall_s": run.wall_s,
        # Other work on the machine shows here first: a 2-core machine at load 4 halves our share.
        "load": list(run.load),
        "run_dir": run.run_dir.name,
    }
    receiver = run.summaries.get("receiver")
    sender = run.summaries.get("sender")
    if receiver is not None:
        duration = receiver.get("duration_s") or 0.0
        metrics["end_to_end_bytes_per_s"] = round(run.total_bytes / duration, 1) if duration > 0 else None
        metrics["files_per_s"] = round(run.files / duration, 1) if duration > 0 else None
    tel = run.telemetry.get("receiver")
    steady = steady_rate(tel.progress, run.total_bytes) if tel is not None else None
    metrics["steady_bytes_per_s"] = round(steady, 1) if steady is not None else None
    metrics["retransmitted_frames"] = sender.get("retransmitted_frames") if sender else None
    metrics["sides"] = {side: side_metrics(s, run.total_bytes) for side, s in run.summaries.items()}
    for side, side_tel in run.telemetry.items():
        if side in metrics["sides"]:
            steady_cpu = steady_cpu_per_gb(side_tel, run.total_bytes)
            metrics["sides"][side]["steady_cpu_s_per_gb"] = steady_cpu
            metrics["sides"][side]["steady_cpu_s_per_gb_total"] = (
                round(sum(steady_cpu.values()), 2) if steady_cpu else None
            )
    return metrics
