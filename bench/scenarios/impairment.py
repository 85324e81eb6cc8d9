"""impairment: throughput through real NATs under delay, loss and a rate cap (root only).

One network lab (``tests/netlab.py``) for the whole scenario: peer-a and peer-b
behind port-restricted cone NATs, coturn for STUN and ``pipeline-signal`` in the
lab's ``stun`` namespace. Each condition is set at peer-a's router (``nat-a``),
so it applies to both directions of the path, and replaces the one before::

    none             nothing
    rtt40            20 ms each way (NFQUEUE delayer): 40 ms round trip
    loss1, loss5     1 % / 5 % of forwarded packets dropped (iptables statistic)
    rate8            tbf at 8 Mbit/s (1 MB/s) on both of nat-a's links
    rtt-rise         none, then 20 ms each way 1.5 s into each transfer
    40ms+1%          20 ms each way and 1 % loss
    100ms+2%         50 ms each way and 2 % loss

Under each: first the raw pair (``bench/lab_raw_peer.py``: a bare aiortc
DataChannel with the pipeline's label, message size and backpressure) moves N
bytes from peer-a to peer-b, then ``pipeline-send`` in peer-a moves one N-byte
file to ``pipeline-receive`` in peer-b (``--stun``, ``--signal`` to the lab's
server, ``--json``, ``--telemetry``), then headless Chromium ↔ Chromium
(``bench/lab_chromium_peer.py``) moves N bytes the same way. Baselines: the raw
pair and Chromium under the same condition in the same run.

Throughput is "first byte → last byte" on the receiving side for both: the raw
receiver timestamps every message; the pipeline's receiver telemetry reports the
bytes stored every ≤ 0.25 s (so sizes keep each transfer above ~2.5 s, where
that granularity is a few per cent). Connecting is left out of both. Also
recorded: the raw channel's "channel open → last byte" rate (the ceiling's
figure), the 10–90 % steady rates, the pipeline's end-to-end rate, whether its
file verified, retransmitted frames, stalls, and the path's RTT as ICE measured it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import Bench, log
from bench.report import fmt_rate, fmt_ratio, fmt_size, median, ratio
from bench.series import ProgressPoint, second_half_rate
from bench.transfer import TransferRun, run_transfer, transfer_metrics
from pipeline.connection.sctp_flight import MIN_CAP
from pipeline.shm_ring import NAME_PREFIX
from tests.cli_harness import Launcher, Proc, new_code, receiver_args, sender_args
from tests.netlab import NetLab, netlab_available

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    quick_bytes: int
    full_bytes: int
    delay_ms: float = 0.0  # each way at nat-a: the RTT grows by twice this
    loss: float = 0.0  # drop probability at nat-a, each way
    rate: str | None = None  # tc rate at nat-a, both links
    rise_ms: float = 0.0  # rtt-rise: this delay each way is set ...
    rise_after_s: float = 0.0  # ... this long after each transfer starts (NFQUEUE delayer reconfigured)

    def apply(self, lab: NetLab) -> None:
        """Set exactly this condition on side a: 0 / None undoes what an earlier one set."""
        lab.delay("a", self.delay_ms)
        lab.loss("a", self.loss)
        lab.rate("a", self.rate)

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {"delay_ms_each_way": self.delay_ms, "loss": self.loss, "rate": self.rate}
        if self.rise_ms:
            found.update(rise_ms_each_way=self.rise_ms, rise_after_s=self.rise_after_s)
        return found

    @contextlib.contextmanager
    def during_run(self, lab: NetLab) -> Iterator[None]:
        """Around one transfer: reset the condition, and for rtt-rise raise the delay
        mid-transfer from a thread that lives until the transfer is over.

        It must outlive the delay: the lab starts the delayer with PR_SET_PDEATHSIG,
        which fires when the *thread* that forked it exits. From a ``threading.Timer``
        the delayer died the moment it was up, ``--queue-bypass`` let the traffic
        through undelayed, and every rtt-rise run before 2026-12-07 measured no rise.
        """
        self.apply(lab)
        over = threading.Event()

        def rise() -> None:
            if not over.wait(self.rise_after_s):
                lab.delay("a", self.rise_ms)
                over.wait()

        thread = threading.Thread(target=rise, name="rtt-rise", daemon=True) if self.rise_ms else None
        if thread is not None:
            thread.start()
        try:
            yield
        finally:
            over.set()
            if thread is not None:
                thread.join()


# Sizes: ≥ ~2.5 s of data per transfer at the rates seen here (see the docstring).
CONDITIONS: tuple[Condition, ...] = (
    Condition("none", "no impairment", 64 * MiB, 128 * MiB),
    Condition("rtt40", "40 ms RTT", 32 * MiB, 64 * MiB, delay_ms=20),
    Condition("loss1", "1 % loss", 32 * MiB, 64 * MiB, loss=0.01),
    Condition("loss5", "5 % loss", 32 * MiB, 64 * MiB, loss=0.05),
    Condition("rate8", "8 Mbit/s cap", 4 * MiB, 16 * MiB, rate="8mbit"),
    # RTT 0.6 ms -> 40 ms 1.5 s after the start (connecting takes 0.3-1 s of it), so
    # the RTT measured at connect time is the short one. At ≤ 30 MB/s the second half
    # of 128 MiB cannot begin before 2.5 s: it all crosses the 40 ms path, and its rate
    # ("after the rise") is set against rtt40's, where the path was 40 ms from the start.
    Condition("rtt-rise", "RTT rises 1 → 40 ms", 128 * MiB, 256 * MiB, rise_ms=20, rise_after_s=1.5),
    Condition("40ms+1%", "40 ms RTT + 1 % loss", 8 * MiB, 16 * MiB, delay_ms=20, loss=0.01),
    Condition("100ms+2%", "100 ms RTT + 2 % loss", 3 * MiB, 4 * MiB, delay_ms=50, loss=0.02),
)
REPEAT = {True: 1, False: 3}  # runs of each side per condition (quick, full), order A B A B


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _timeout(total_bytes: int) -> float:
    return 60 + total_bytes / 2e5  # 0.2 MB/s would be a broken run, not a slow one


# -- the pipeline's CLIs in the lab ----------------------------------------------------


class LabPair:
    """Starts ``pipeline-send`` in peer-a and ``pipeline-receive`` in peer-b, through the
    lab's signaling server; called like ``tests.cli_harness.start_pair`` (see
    ``run_transfer``'s ``start``). The processes go into the launcher, which stops what
    is left. Every CLI's pid goes into ``pids`` (its shared memory is named after it)."""

    def __init__(self, lab: NetLab, url: str, pids: list[int]) -> None:
        self.lab = lab
        self.url = url
        self.pids = pids

    def __call__(
        self,
        launcher: Launcher,
        paths: Sequence[Path],
        out: Path,
        *,
        sender_extra: Sequence[str],
        receiver_extra: Sequence[str],
    ) -> tuple[Proc, Proc]:
        code = new_code()
        stun = ["--stun", self.lab.stun_url]
        sender = self._start(
            launcher, "sender", "peer-a", "pipeline.cli.send",
            sender_args(paths, code, "--signal", self.url, *stun, *sender_extra),
        )  # fmt: skip
        sender.wait_for_output(r"joined the room", 30)
        receiver = self._start(
            launcher, "receiver", "peer-b", "pipeline.cli.receive",
            receiver_args(code, self.url, out, *stun, *receiver_extra),
        )  # fmt: skip
        return sender, receiver

    def _start(self, launcher: Launcher, name: str, ns: str, module: str, args: Sequence[str]) -> Proc:
        log_dir = launcher.log_dir
        json_path = log_dir / f"{name}.json"
        argv = [sys.executable, "-m", module, *args, "--json", str(json_path)]
        with open(log_dir / f"{name}.out", "w") as out, open(log_dir / f"{name}.err", "w") as err:
            popen = self.lab.run(ns, argv, stdout=out, stderr=err, text=True, env=_env(), cwd=log_dir)
        self.pids.append(popen.pid)
        proc = Proc(name, popen, log_dir, json_path)
        launcher.procs.append(proc)
        return proc


def _start_signaling(lab: NetLab, log_dir: Path) -> str:
    host, port = lab.signaling_address
    argv = [sys.executable, "-m", "pipeline.cli.signal_server", "--host", host, "--port", str(port)]
    with open(log_dir / "signal.out", "w") as out, open(log_dir / "signal.err", "w") as err:
        proc = lab.run("stun", argv, stdout=out, stderr=err, env=_env(), cwd=log_dir)
    lab.wait_listening(proc, port)
    return f"ws://{host}:{port}/ws"


def first_to_last_rate(progress: Sequence[ProgressPoint]) -> float | None:
    """Bytes/s from the first progress point with data to the first one with the final
    count (the first point's bytes left out, as they arrived before it)."""
    points = [p for p in progress if p.bytes_done > 0]
    if len(points) < 2:
        return None
    top = max(p.bytes_done for p in points)
    t_last = min(p.t for p in points if p.bytes_done == top)
    first = points[0]
    return (top - first.bytes_done) / (t_last - first.t) if t_last > first.t else None


def _pipeline_figures(run: TransferRun) -> dict[str, Any]:
    metrics = transfer_metrics(run)
    receiver = run.summaries.get("receiver") or {}
    tel = run.telemetry.get("receiver")
    sender_pair = ((run.summaries.get("sender") or {}).get("connection") or {}).get("selected_pair") or {}
    sides = metrics.get("sides", {})
    metrics.update(
        bytes_per_s=first_to_last_rate(tel.progress) if tel is not None else None,
        second_half_bytes_per_s=(
            second_half_rate(((p.t, p.bytes_done) for p in tel.progress), run.total_bytes) if tel is not None else None
        ),
        verified=run.ok and receiver.get("files_verified") == run.files,
        stalls=[sides.get(side, {}).get("stalls_mid_transfer") for side in ("sender", "receiver")],
        rtt_ms=sender_pair.get("rtt_ms"),
    )
    return metrics


def run_pipeline(
    bench: Bench, lab_pair: LabPair, label: str, path: Path, size: int, run_dir: Path
) -> dict[str, Any]:
    """One pipeline transfer in the lab; run again after a hang, as Bench.transfer does."""
    for attempt in range(1 + bench.settings.retries):
        suffix = f"-retry{attempt}" if attempt else ""
        log(f"{label}{suffix}: pipeline, {fmt_size(size)}")
        target = run_dir.with_name(run_dir.name + suffix)
        run = run_transfer(
            label + suffix, [path], size, 1, target, bench.scratch, timeout=_timeout(size), start=lab_pair
        )
        if run.ok:
            break
        log(f"  -> FAILED: {run.error}")
        bench.failed_attempts.append({"label": label, "run_dir": target.name, "error": run.error, "hung": run.hung})
        if not run.hung:
            break
    figures = _pipeline_figures(run)
    if run.ok:
        log(f"  -> {fmt_rate(figures['bytes_per_s'])} first → last byte, retransmitted {figures['retransmitted_frames']}")
    return figures


# -- the raw pair in the lab -----------------------------------------------------------


def _last_json(path: Path) -> dict[str, Any] | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


def run_raw(bench: Bench, lab: NetLab, label: str, size: int, run_dir: Path) -> dict[str, Any]:
    """The raw aiortc pair, sender in peer-a, receiver in peer-b; never raises for a failed run."""
    log(f"{label}: raw aiortc, {fmt_size(size)}")
    d = bench.defaults
    timeout = _timeout(size)
    exchange = run_dir / "exchange"
    exchange.mkdir(parents=True)
    common = [
        "--exchange", str(exchange), "--bytes", str(size), "--stun", lab.stun_url,
        "--message-size", str(d.transfer.chunk_size),
        "--buffered-high", str(d.channel.buffered_high), "--buffered-low", str(d.channel.buffered_low),
        "--connect-timeout", str(d.ice.connect_timeout), "--timeout", str(timeout),
    ]  # fmt: skip
    procs: dict[str, subprocess.Popen[Any]] = {}
    started = time.monotonic()
    try:
        for role, ns in (("send", "peer-a"), ("receive", "peer-b")):
            argv = [sys.executable, "-m", "bench.lab_raw_peer", "--role", role, *common]
            with open(run_dir / f"{role}.out", "w") as out, open(run_dir / f"{role}.err", "w") as err:
                procs[role] = lab.run(ns, argv, stdout=out, stderr=err, env=_env(), cwd=ROOT)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, started + timeout + 10 - time.monotonic()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # our own child, still unreaped: its pid is its own
                proc.kill()
                proc.wait(5)
    sent, received = _last_json(run_dir / "send.out") or {}, _last_json(run_dir / "receive.out") or {}
    problems = [
        f"{role}: {report.get('error') or 'no report'}"
        for role, report in (("send", sent), ("receive", received))
        if report.get("outcome") != "completed"
    ]
    result: dict[str, Any] = {
        "ok": not problems,
        "error": "; ".join(problems) or None,
        "bytes": size,
        "wall_s": round(time.monotonic() - started, 3),
        "run_dir": run_dir.name,
        "bytes_per_s": received.get("first_to_last_bytes_per_s"),
        "open_to_last_bytes_per_s": received.get("bytes_per_s"),
        "steady_bytes_per_s": received.get("steady_bytes_per_s"),
        "second_half_bytes_per_s": received.get("second_half_bytes_per_s"),
        "setup_s": sent.get("setup_s"),
        "rtt_ms": sent.get("rtt_ms"),
        "sender": sent,
        "receiver": received,
    }
    if result["ok"]:
        log(f"  -> {fmt_rate(result['bytes_per_s'])} first → last byte")
    else:
        log(f"  -> FAILED: {result['error']}")
    return result


def run_chromium(bench: Bench, lab: NetLab, label: str, size: int, run_dir: Path) -> dict[str, Any]:
    """Headless Chromium ↔ Chromium (bench/lab_chromium_peer.py), sender in peer-a, receiver
    in peer-b, same message size and backpressure; never raises for a failed run."""
    log(f"{label}: chromium ↔ chromium, {fmt_size(size)}")
    d = bench.defaults
    timeout = _timeout(size)
    exchange = run_dir / "exchange"
    exchange.mkdir(parents=True)
    common = [
        "--exchange", str(exchange), "--bytes", str(size), "--stun", lab.stun_url,
        "--message-size", str(d.transfer.chunk_size),
        "--buffered-high", str(d.channel.buffered_high), "--buffered-low", str(d.channel.buffered_low),
        "--timeout", str(timeout),
    ]  # fmt: skip
    procs: dict[str, subprocess.Popen[Any]] = {}
    started = time.monotonic()
    try:
        for role, ns in (("send", "peer-a"), ("receive", "peer-b")):
            argv = [sys.executable, "-m", "bench.lab_chromium_peer", "--role", role, *common]
            with open(run_dir / f"{role}.out", "w") as out, open(run_dir / f"{role}.err", "w") as err:
                procs[role] = lab.run(ns, argv, stdout=out, stderr=err, env=_env(), cwd=ROOT)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, started + timeout + 20 - time.monotonic()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    sent, received = _last_json(run_dir / "send.out") or {}, _last_json(run_dir / "receive.out") or {}
    problems = [
        f"{role}: {report.get('error') or 'no report'}"
        for role, report in (("send", sent), ("receive", received))
        if report.get("outcome") != "completed"
    ]
    result = {
        "ok": not problems,
        "error": "; ".join(problems) or None,
        "bytes": size,
        "wall_s": round(time.monotonic() - started, 3),
        "run_dir": run_dir.name,
        "bytes_per_s": received.get("first_to_last_bytes_per_s"),
        "second_half_bytes_per_s": received.get("second_half_bytes_per_s"),
    }
    log(f"  -> {fmt_rate(result['bytes_per_s'])} first → last byte" if result["ok"] else f"  -> FAILED: {result['error']}")
    return result


# -- the scenario ------------------------------------------------------------------------


def _shm_segments() -> set[str]:
    with contextlib.suppress(OSError):
        return {name for name in os.listdir(SHM) if name.startswith(NAME_PREFIX)}
    return set()


def lab_unavailable(scenario: str, title: str) -> dict[str, Any] | None:
    """The skipped result of a lab scenario on a machine without the lab, else None."""
    available, reason = netlab_available()
    if available:
        return None
    log(f"{scenario}: cannot run here: {reason}")
    return {"title": title, "skipped": reason, "error": f"cannot run here: {reason}"}


def run(bench: Bench) -> dict[str, Any]:
    title = "Impairment: throughput through two NATs under delay, loss and a rate cap"
    skipped = lab_unavailable("impairment", title)
    if skipped is not None:
        return skipped
    repeat = REPEAT[bench.settings.quick]
    runs_dir = bench.out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    shm_before = _shm_segments()
    conditions: list[dict[str, Any]] = []
    cli_pids: list[int] = []
    lab = NetLab(f"bi{os.getpid() % 100000}", nat_a="cone", nat_b="cone")
    try:
        lab.start()
        log(f"lab up in {lab.timings.get('up_s', 0):.2f} s (cone <-> cone, STUN {lab.stun_url})")
        lab_pair = LabPair(lab, _start_signaling(lab, runs_dir), cli_pids)
        counter = 0

        def next_dir(kind: str, condition: Condition) -> Path:
            nonlocal counter
            counter += 1
            return runs_dir / f"impairment-{counter:02d}-{condition.name}-{kind}"

        wanted = bench.settings.impairment_conditions
        for condition in (c for c in CONDITIONS if not wanted or c.name in wanted):
            size = condition.quick_bytes if bench.settings.quick else condition.full_bytes
            condition.apply(lab)
            log(f"--- {condition.label} ({fmt_size(size)})")
            raw_runs: list[dict[str, Any]] = []
            pipeline_runs: list[dict[str, Any]] = []
            chromium_runs: list[dict[str, Any]] = []
            with bench.one_file(size) as path:
                for i in range(repeat):
                    label = f"impairment-{condition.name}" + (f"-{i + 1}" if repeat > 1 else "")
                    with condition.during_run(lab):
                        raw_runs.append(run_raw(bench, lab, label, size, next_dir("raw", condition)))
                    with condition.during_run(lab):
                        pipeline_runs.append(run_pipeline(bench, lab_pair, label, path, size, next_dir("pipeline", condition)))
                    with condition.during_run(lab):
                        chromium_runs.append(run_chromium(bench, lab, label, size, next_dir("chromium", condition)))
            conditions.append(_condition_result(condition, size, raw_runs, pipeline_runs, chromium_runs))
    finally:
        lab.close()
    cleanup = {
        "lab_leftovers": lab.leftovers(),
        # Segments named after one of our CLIs' pids that outlived the scenario.
        "shm_leftovers": sorted(
            name
            for name in _shm_segments() - shm_before
            if any(name.startswith(f"{NAME_PREFIX}{pid}-") for pid in cli_pids)
        ),
        "lab_down_s": round(lab.timings.get("down_s", 0.0), 2),
    }
    return _summarize(title, bench, repeat, conditions, cleanup)


def _condition_result(
    condition: Condition,
    size: int,
    raw_runs: list[dict[str, Any]],
    pipeline_runs: list[dict[str, Any]],
    chromium_runs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    chromium_runs = chromium_runs or []
    chromium_rate = median(r["bytes_per_s"] for r in chromium_runs if r["ok"])
    raw_ok = [r for r in raw_runs if r["ok"]]
    pipe_ok = [r for r in pipeline_runs if r["ok"]]
    raw_rate = median(r["bytes_per_s"] for r in raw_ok)
    pipe_rate = median(r["bytes_per_s"] for r in pipe_ok)
    half = {
        side: median(r.get("second_half_bytes_per_s") for r in runs if r["ok"])
        for side, runs in (("raw", raw_runs), ("pipeline", pipeline_runs), ("chromium", chromium_runs))
    }
    raw_steady = median(r["steady_bytes_per_s"] for r in raw_ok)
    pipe_steady = median(r["steady_bytes_per_s"] for r in pipe_ok)
    return {
        "name": condition.name,
        "label": condition.label,
        "impairment": condition.describe(),
        "bytes": size,
        "raw_bytes_per_s": raw_rate,
        "pipeline_bytes_per_s": pipe_rate,
        "ratio": ratio(pipe_rate, raw_rate),
        "chromium_bytes_per_s": chromium_rate,
        "ratio_chromium": ratio(pipe_rate, chromium_rate),
        "chromium_runs": chromium_runs,
        "raw_open_to_last_bytes_per_s": median(r["open_to_last_bytes_per_s"] for r in raw_ok),
        "raw_steady_bytes_per_s": raw_steady,
        "pipeline_steady_bytes_per_s": pipe_steady,
        "ratio_steady": ratio(pipe_steady, raw_steady),
        # The second half of the bytes: for rtt-rise, all of it after the rise.
        "second_half_bytes_per_s": half,
        "pipeline_end_to_end_bytes_per_s": median(r.get("end_to_end_bytes_per_s") for r in pipe_ok),
        "verified": f"{sum(1 for r in pipeline_runs if r['verified'])}/{len(pipeline_runs)}",
        "raw_completed": f"{len(raw_ok)}/{len(raw_runs)}",
        "retransmitted_frames": [r["retransmitted_frames"] for r in pipeline_runs],
        "stalls": [r["stalls"] for r in pipeline_runs],
        "rtt_ms": median([*(r["rtt_ms"] for r in raw_runs), *(r["rtt_ms"] for r in pipeline_runs)]),
        "raw_runs": raw_runs,
        "pipeline_runs": pipeline_runs,
    }


def _fmt_list(values: list[Any], fmt: Callable[[Any], str] = str) -> str:
    return ", ".join("–" if v is None else fmt(v) for v in values) or "–"


def _summarize(
    title: str, bench: Bench, repeat: int, conditions: list[dict[str, Any]], cleanup: dict[str, Any]
) -> dict[str, Any]:
    n = f" (median of {repeat})" if repeat > 1 else ""
    rows = [
        [
            c["label"],
            fmt_size(c["bytes"]),
            fmt_rate(c["raw_bytes_per_s"]),
            fmt_rate(c["pipeline_bytes_per_s"]),
            fmt_ratio(c["ratio"]),
            fmt_rate(c.get("chromium_bytes_per_s")),
            fmt_ratio(c.get("ratio_chromium")),
            fmt_ratio(c["ratio_steady"]),
            c["verified"],
            _fmt_list(c["retransmitted_frames"]),
            _fmt_list(c["stalls"], lambda s: "/".join("?" if x is None else str(x) for x in s)),
            "–" if c["rtt_ms"] is None else f"{c['rtt_ms']:.1f} ms",
            " / ".join(fmt_rate(c["second_half_bytes_per_s"].get(side)) for side in ("raw", "pipeline", "chromium")),
        ]
        for c in conditions
    ]
    result: dict[str, Any] = {
        "title": title,
        "baseline": (
            "raw aiortc DataChannel (bench/lab_raw_peer.py) through the same lab under the same condition, "
            "run just before each pipeline transfer; rates first byte → last byte on the receiver"
        ),
        "params": {
            "repeat": repeat,
            "conditions": [
                {"name": c.name, "label": c.label, **c.describe()} for c in CONDITIONS
            ],
            "nat": "cone <-> cone",
            "message_size": bench.defaults.transfer.chunk_size,
            "buffered_high": bench.defaults.channel.buffered_high,
            "buffered_low": bench.defaults.channel.buffered_low,
        },
        "conditions": conditions,
        "cleanup": cleanup,
        "result": {
            c["name"]: {"ratio": c["ratio"], "ratio_chromium": c.get("ratio_chromium"), "pipeline_bytes_per_s": c["pipeline_bytes_per_s"], "raw_bytes_per_s": c["raw_bytes_per_s"]}
            for c in conditions
        },
        "table": {
            "columns": [
                "condition",
                "bytes",
                f"raw aiortc{n}",
                f"pipeline{n}",
                "pipeline / raw",
                f"chromium ↔ chromium{n}",
                "pipeline / chromium",
                "ratio, steady 10–90 %",
                "verified",
                "retransmitted frames",
                "stalls ≥1 s s/r",
                "RTT (ICE)",
                f"second half: raw / pipeline / chromium{n}",
            ],
            "rows": rows,
        },
    }
    rise = rise_result(conditions)
    if rise is not None:
        result["result"]["rtt_rise"] = rise
    if cleanup["lab_leftovers"] or cleanup["shm_leftovers"]:
        result["error"] = f"left behind: {cleanup['lab_leftovers'] + cleanup['shm_leftovers']}"
    return result


def rise_result(conditions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Does the flight cap follow a rising RTT? The second half of rtt-rise's bytes (all
    after the rise) against the second half of rtt40's (40 ms from the start, where the
    cap was set for 40 ms at connect time), each side against itself, same run. With a
    cap that stayed at its connect-time value (256 KiB for the 1 ms path) a side cannot
    pass 256 KiB / 40 ms = 6.6 MB/s after the rise."""
    by_name = {c["name"]: c for c in conditions}
    if "rtt-rise" not in by_name or "rtt40" not in by_name:
        return None
    rise = by_name["rtt-rise"]
    after, steady = rise["second_half_bytes_per_s"], by_name["rtt40"]["second_half_bytes_per_s"]
    rtt_after_s = 2 * rise["impairment"]["rise_ms_each_way"] / 1000
    return {
        "after_rise_bytes_per_s": after,
        "rtt40_bytes_per_s": steady,
        "ratio": {side: ratio(after.get(side), steady.get(side)) for side in after},
        "connect_time_cap_bound_bytes_per_s": MIN_CAP / rtt_after_s,
    }
