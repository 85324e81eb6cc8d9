"""The soak: many sessions through one signaling server, normal ones and every fault.

Each session runs the real CLIs (``tests/cli_harness.py``) against one standalone
``pipeline-signal``, several at a time.  A session is one :class:`Case`: a normal
transfer; Ctrl-C on either side; SIGKILL of each kind of process (connection,
reader, hasher, writer, the supervisor, i.e. the CLI itself) on each side; the
receiver's disk filling up mid-transfer; a sender whose ``file_end`` digest is
wrong (``tests/rogue_peer.py --act corrupt``).  For each it records what a
demanding user would check afterwards (:class:`Record`):

* the outcome and exit code of each side, against what Appendix A says that
  fault must give (:data:`EXPECTED`): a different one is a *wrong verdict*;
* files left in ``--out``: any partial or any file that is not a byte-identical
  copy of its source is *data loss* (a half-done file left behind), and so is a
  pre-existing file that changed;
* ``/dev/shm`` segments of either CLI left once both exited;
* processes left: every descendant of either CLI seen while it ran, still alive
  once both CLIs had exited.  A SIGKILLed supervisor is the one exception, since
  nothing can reap for it: its children must notice and exit on their own
  within :data:`ORPHAN_GRACE` (the table reports how long the slowest took).

A worker killed while the session is already ending may find nothing left to
do: when both sides then complete and every file is a verified copy, the session
counts as *fault missed* (the true verdict is `completed`), not as a wrong one.

``python -m bench soak`` runs :func:`run_soak` with 200+ sessions; the suite runs
a short form (``tests/integration/test_soak.py``) with one session per case.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.signaling_load import signaling_server
from pipeline.mediagen import tree_digest
from tests.cli_harness import Launcher, Proc, new_code, receiver_args, sender_args, small_tmpfs

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
SHM_DIR = "/dev/shm"
POLL = 0.05
# Short deadlines, so a side whose peer vanished gives up in seconds (as in
# tests/integration/test_failures.py).
CONFIG = "ice:\n  progress_timeout: 3\n  reconnect_timeout: 5\n  connect_timeout: 15\n"
# Small chunks and a small window: a few MB/s, so a fault lands mid-transfer.
SLOW = ("--chunk-size", "16KiB", "--window", "8")
SESSION_DEADLINE = 90.0
# A SIGKILLed supervisor cannot reap: its children must notice and exit on their own
# (the connection process first tells the peer `cancel`), within this.
ORPHAN_GRACE = 10.0
PROGRESS_DEADLINE = 45.0
EXIT_CANCELLED, EXIT_HASH_MISMATCH, KILLED = 130, 4, -signal.SIGKILL


@dataclass(frozen=True)
class Case:
    fault: str  # none | ctrl-c | kill | disk-full | wrong-digest
    side: str | None = None  # sender | receiver: where the fault happens
    role: str | None = None  # for kill: connection | reader | hasher | writer | supervisor

    @property
    def name(self) -> str:
        return "-".join(part for part in (self.fault, self.side, self.role) if part)


CASES: tuple[Case, ...] = (
    Case("none"),
    Case("ctrl-c", "sender"),
    Case("ctrl-c", "receiver"),
    *(Case("kill", "sender", r) for r in ("connection", "reader", "hasher", "supervisor")),
    *(Case("kill", "receiver", r) for r in ("connection", "writer", "hasher", "supervisor")),
    Case("disk-full", "receiver"),
    Case("wrong-digest", "sender"),
)


def expected(case: Case) -> dict[str, tuple[str | None, int]]:
    """(outcome, exit code) per side that Appendix A requires; outcome None: no summary
    (a SIGKILLed CLI writes none)."""
    if case.fault == "none":
        return {"sender": ("completed", 0), "receiver": ("completed", 0)}
    if case.fault == "ctrl-c":
        return {"sender": ("cancelled", EXIT_CANCELLED), "receiver": ("cancelled", EXIT_CANCELLED)}
    if case.fault == "wrong-digest":
        return {"receiver": ("failed", EXIT_HASH_MISMATCH)}  # the sender is the rogue
    if case.fault == "kill" and case.role == "supervisor":
        # The CLI is gone; its connection process, orphaned, sends a cancel frame
        # ("the sending program stopped") before it exits: the peer ends cancelled (A.1).
        other = "receiver" if case.side == "sender" else "sender"
        return {str(case.side): (None, KILLED), other: ("cancelled", EXIT_CANCELLED)}
    return {"sender": ("failed", 1), "receiver": ("failed", 1)}


@dataclass
class Record:
    case: str
    index: int
    outcome: dict[str, str | None] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    error_codes: dict[str, str | None] = field(default_factory=dict)
    files_left: int = 0
    bad_files: list[str] = field(default_factory=list)  # partial or not a verified copy
    preexisting_changed: list[str] = field(default_factory=list)
    shm_left: list[str] = field(default_factory=list)
    processes_left: list[str] = field(default_factory=list)
    wrong_verdict: str | None = None
    fault_missed: bool = False  # the fault landed after the work was done (all verified)
    orphan_s: float | None = None  # a SIGKILLed supervisor's children: seconds until all had exited
    seconds: float = 0.0
    note: str = ""

    @property
    def clean(self) -> bool:
        return not (
            self.bad_files
            or self.preexisting_changed
            or self.shm_left
            or self.processes_left
            or self.wrong_verdict
        )


# -- watching one CLI ---------------------------------------------------------------


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


@dataclass
class Watched:
    proc: Proc
    telemetry: Path | None
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def running(self) -> bool:
        return self.proc.popen.poll() is None

    def look(self) -> None:
        """Remember every descendant alive now."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.popen.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def role_pid(self, role: str) -> int | None:
        if role == "supervisor":
            return self.proc.popen.pid
        pid = None
        for record in _jsonl(self.telemetry) if self.telemetry else []:
            if record.get("type") == "sample":
                p = record["processes"].get(role)
                pid = p["pid"] if p and not p["gone"] else pid
        return pid

    def bytes_done(self) -> int:
        done = 0
        for record in _jsonl(self.telemetry) if self.telemetry else []:
            if record.get("type") == "progress":
                done = max(done, int(record["bytes_done"]))
        return done


def _orphans_exit(killed: Watched, record: Record) -> float | None:
    """Wait (up to ORPHAN_GRACE) for a killed supervisor's children; seconds they took."""
    started = time.monotonic()
    while time.monotonic() - started < ORPHAN_GRACE:
        if not any(_alive(p) for p in killed.seen.values()):
            return time.monotonic() - started
        time.sleep(POLL)
    return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:90]}"
    except psutil.Error:
        return str(proc.pid)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- one session --------------------------------------------------------------------


@dataclass
class Soak:
    """Shared by every session: the signaling URL, the sources, where to work."""

    url: str
    work: Path
    small_source: Path  # the normal case's tree
    slow_source: Path  # the fault cases' tree (one larger file)
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, low: float, high: float) -> float:
        with self.lock:
            return self.rng.uniform(low, high)


def run_session(soak: Soak, case: Case, index: int) -> Record:
    record = Record(case.name, index)
    run_dir = soak.work / f"{index:04d}-{case.name}"
    run_dir.mkdir(parents=True)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            out = run_dir / "out"
            if case.fault == "disk-full":
                out = stack.enter_context(small_tmpfs(run_dir / "disk", "40m"))
            _session(soak, case, run_dir, out, record)
    except AssertionError as exc:  # the harness's own deadlines
        record.wrong_verdict = f"harness: {str(exc).splitlines()[0]}"
    record.seconds = round(time.monotonic() - started, 2)
    if record.clean:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep only what needs looking at
    return record


def _preexisting(out: Path) -> dict[str, str]:
    """Files a user already had where the transfer writes: they must not change."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "keep.txt").write_bytes(b"already here\n")
    nested = out / "media" / "notes.txt"  # inside the directory the transfer fills
    nested.parent.mkdir(parents=True, exist_ok=True)
    nested.write_bytes(os.urandom(1000))
    return {str(p.relative_to(out)): _sha(p) for p in (out / "keep.txt", nested)}


def _session(soak: Soak, case: Case, run_dir: Path, out: Path, record: Record) -> None:
    before = _preexisting(out)
    config = run_dir / "soak.yaml"
    config.write_text(CONFIG)
    code = new_code()
    source = soak.small_source if case.fault == "none" else soak.slow_source
    slow = () if case.fault in ("none", "wrong-digest") else SLOW
    with Launcher(run_dir) as launcher:
        launcher.env["PYTHONPATH"] = str(REPO)
        common = ("--config", str(config), *slow)
        if case.fault == "wrong-digest":
            rogue = launcher.start(
                "sender",
                "tests.rogue_peer",
                ["--role", "sender", "--act", "corrupt", "--signal", soak.url, "--code", code],
                json_out=False,
            )
            rogue.wait_for_output(r"joined the room", 30, stream="stdout")
            sender = Watched(rogue, None)
        else:
            tel = run_dir / "sender.telemetry"
            proc = launcher.start(
                "sender",
                "pipeline.cli.send",
                sender_args([source], code, "--signal", soak.url, *common, "--telemetry", str(tel)),
            )
            proc.wait_for_output(r"joined the room", 30)
            sender = Watched(proc, tel)
        tel = run_dir / "receiver.telemetry"
        receiver = Watched(
            launcher.start(
                "receiver",
                "pipeline.cli.receive",
                receiver_args(code, soak.url, out, "--yes", *common, "--telemetry", str(tel)),
            ),
            tel,
        )
        sides = {"sender": sender, "receiver": receiver}
        _fault(soak, case, sides, out, record)
        deadline = time.monotonic() + SESSION_DEADLINE
        while any(w.running() for w in sides.values()):
            for w in sides.values():
                if w.running():
                    w.look()
            if time.monotonic() > deadline:
                raise AssertionError(f"still running {SESSION_DEADLINE} s after the fault")
            time.sleep(POLL)
        if case.fault == "wrong-digest":
            rogue_done = sender.proc.popen.returncode
            del sides["sender"]  # the rogue is not ours to judge
            record.note = f"rogue exit {rogue_done}"
        _judge(case, sides, out, source, before, record)


def _fault(soak: Soak, case: Case, sides: dict[str, Watched], out: Path, record: Record) -> None:
    if case.fault in ("none", "wrong-digest"):
        for w in sides.values():
            w.look()
        return
    receiver = sides["receiver"]
    deadline = time.monotonic() + PROGRESS_DEADLINE
    while receiver.bytes_done() <= 0:
        if time.monotonic() > deadline or not all(w.running() for w in sides.values()):
            raise AssertionError("no progress before the fault")
        time.sleep(POLL)
    for w in sides.values():
        w.look()
    side = sides[str(case.side)]
    if case.fault == "ctrl-c":
        time.sleep(soak.delay(0.0, 1.0))
        side.proc.popen.send_signal(signal.SIGINT)
    elif case.fault == "kill":
        pid = None
        while pid is None and time.monotonic() < deadline:
            pid = side.role_pid(str(case.role))
            time.sleep(POLL if pid is None else 0)
        if pid is None:
            raise AssertionError(f"no {case.role} pid in the {case.side}'s telemetry")
        time.sleep(soak.delay(0.0, 1.0))
        for w in sides.values():
            w.look()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    elif case.fault == "disk-full":
        _fill(out / "filler.bin", 1 * MiB)


def _fill(path: Path, left: int) -> None:
    """Take all but ``left`` bytes of ``path``'s file system (someone else's file)."""
    for _ in range(20):
        size = shutil.disk_usage(path.parent).free - left
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, max(size, 1))
            return
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)


def _judge(
    case: Case,
    sides: dict[str, Watched],
    out: Path,
    source: Path,
    before: dict[str, str],
    record: Record,
) -> None:
    if case.role == "supervisor":
        record.orphan_s = _orphans_exit(sides[str(case.side)], record)
    # Processes first, before anything else takes time: none may outlive its CLI.
    record.processes_left = [
        _describe(p) for w in sides.values() for p in w.seen.values() if _alive(p)
    ]
    for w in sides.values():
        for p in w.seen.values():
            if _alive(p):
                with contextlib.suppress(psutil.Error):
                    p.kill()
    prefixes = tuple(f"pxfer-{w.proc.popen.pid}-" for w in sides.values())
    record.shm_left = [n for n in os.listdir(SHM_DIR) if n.startswith(prefixes)]
    for name in record.shm_left:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(SHM_DIR, name))
    want = expected(case)
    wrong = []
    for name, w in sides.items():
        finished = w.proc.wait(1)
        summary = finished.summary
        record.exit_codes[name] = finished.returncode
        record.outcome[name] = summary["outcome"] if summary else None
        record.error_codes[name] = summary.get("error_code") if summary else None
        got = (record.outcome[name], finished.returncode)
        if got != want[name]:
            wrong.append(f"{name} {got}, expected {want[name]}")
    if case.fault == "wrong-digest" and record.error_codes.get("receiver") != "hash_mismatch":
        wrong.append(f"receiver error_code {record.error_codes.get('receiver')}")
    # Files: every one left is whole and verified, or one of the user's own.
    sources = {f"{source.name}/{rel}": v for rel, v in tree_digest(source).items()}
    if case.fault == "wrong-digest":
        from tests import rogue_peer

        sources = {"good.bin": (len(rogue_peer.GOOD), hashlib.sha256(rogue_peer.GOOD).hexdigest())}
    left = tree_digest(out) if out.exists() else {}
    for rel, value in left.items():
        if rel in before or rel == "filler.bin":
            continue
        record.files_left += 1
        if rel.endswith(".part") or sources.get(rel) != value:
            record.bad_files.append(rel)
    record.preexisting_changed = [
        rel
        for rel, digest in before.items()
        if not (out / rel).exists() or _sha(out / rel) != digest
    ]
    # Both sides completed with every file a verified copy: the fault came after the
    # work was done (a worker killed while the session was ending), and `completed`
    # is then the true verdict.
    all_verified = not record.bad_files and record.files_left == len(sources)
    if (
        wrong
        and all_verified
        and all(record.outcome[n] == "completed" and record.exit_codes[n] == 0 for n in sides)
    ):
        record.fault_missed = True
        wrong = []
    record.wrong_verdict = "; ".join(wrong) or None


# -- many sessions ------------------------------------------------------------------


def plan(sessions: int, seed: int) -> list[Case]:
    """``sessions`` cases: every case at least once (if there is room), the rest drawn
    at random with normal transfers as likely as all faults together."""
    rng = random.Random(seed)
    cases = list(CASES[:sessions])
    faults = [c for c in CASES if c.fault != "none"]
    while len(cases) < sessions:
        cases.append(CASES[0] if rng.random() < 0.5 else rng.choice(faults))
    rng.shuffle(cases)
    return cases


def run_soak(
    work: Path,
    sessions: int,
    concurrency: int,
    small_source: Path,
    slow_source: Path,
    *,
    seed: int = 12,
    progress: Callable[[Record, int, int], None] | None = None,
) -> list[Record]:
    cases = plan(sessions, seed)
    records: list[Record] = []
    with signaling_server(work) as server:
        soak = Soak(server.url, work, small_source, slow_source, random.Random(seed))
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(run_session, soak, case, i) for i, case in enumerate(cases)]
            for future in futures:
                record = future.result()
                records.append(record)
                if progress is not None:
                    progress(record, len(records), len(cases))
    return records


def tabulate(records: list[Record]) -> list[dict[str, Any]]:
    """One row per case: sessions, verdicts right, leaks, data loss."""
    rows = []
    for case in CASES:
        mine = [r for r in records if r.case == case.name]
        if not mine:
            continue
        rows.append(
            {
                "case": case.name,
                "sessions": len(mine),
                "expected": " / ".join(
                    f"{s} {o or 'killed'} {c}" for s, (o, c) in expected(case).items()
                ),
                "wrong_verdicts": sum(1 for r in mine if r.wrong_verdict),
                "fault_missed": sum(1 for r in mine if r.fault_missed),
                "files_left": sum(r.files_left for r in mine),
                "bad_files": sum(len(r.bad_files) for r in mine),
                "preexisting_changed": sum(len(r.preexisting_changed) for r in mine),
                "shm_left": sum(len(r.shm_left) for r in mine),
                "processes_left": sum(len(r.processes_left) for r in mine),
                "median_s": sorted(r.seconds for r in mine)[len(mine) // 2],
                # A killed supervisor's children: the slowest to exit on their own.
                "orphans_max_s": max(
                    (r.orphan_s for r in mine if r.orphan_s is not None), default=None
                ),
            }
        )
    return rows


def as_dicts(records: list[Record]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]


def make_sources(root: Path, *, slow_size: int = 24 * MiB) -> tuple[Path, Path]:
    """The two trees every session sends: small (normal case) and slow (faults)."""
    from pipeline.mediagen import generate_media_tree

    small, slow = root / "small" / "media", root / "slow" / "media"
    generate_media_tree(
        small,
        seed=31,
        small_files=6,
        small_size_range=(0, 48 * 1024),
        large_files=1,
        large_size=2 * MiB,
    )
    generate_media_tree(
        slow,
        seed=32,
        small_files=4,
        small_size_range=(0, 48 * 1024),
        large_files=1,
        large_size=slow_size,
    )
    subprocess.run(["sync"], check=False)
    return small, slow
