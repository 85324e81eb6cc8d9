"""Failure handling with the real CLIs (issue 4, Appendix A.2 rules 1-2).

Every test runs ``pipeline-send`` and ``pipeline-receive`` as processes
(``tests/cli_harness.py``), breaks something in the middle of a transfer and
checks what a user would see: both programs end by themselves within a
deadline, with exit code 1 (``failed``) and a summary that says why, nothing
half-written in ``--out``, no process of either pipeline left running, and no
``pxfer-`` segment left in ``/dev/shm``.

Which process is which: every CLI writes ``--telemetry`` JSON lines whose
``sample`` records map each role (``connection``, ``reader``, ``hasher``,
``writer``) to its pid, twice a second, and whose ``progress`` records carry
``bytes_done``.  The tests read both while the transfer runs (no hook in the
product needed) and check that the pid is a ``multiprocessing`` child of that
CLI before killing it.

Short deadlines come from a config file (progress watchdog 3 s, reconnect
5 s, connect 10 s), so a side whose peer vanished gives up in seconds.
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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline.mediagen import generate_media_tree, tree_digest
from tests.cli_harness import (
    Finished,
    Launcher,
    Proc,
    free_port,
    new_code,
    receiver_args,
    sender_args,
    small_tmpfs,
)

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
MEDIA_LARGE = 128 * MiB
SHM_DIR = "/dev/shm"
CONFIG = """\
ice:
  progress_timeout: 3
  reconnect_timeout: 5
  connect_timeout: 10
"""
# From a failure to both CLIs' exit: the watchdog (3 s), the reconnect deadline
# (5 s) and the supervisor's cleanup (stop grace 5 s) with room for a busy machine.
EXIT_DEADLINE = 40.0
PROGRESS_DEADLINE = 45.0  # from the receiver's start to its first stored bytes
POLL = 0.05


# -- one transfer under observation ------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a JSON-lines file another process is still writing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:  # the last piece may be half-written
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


@dataclass
class Side:
    """One CLI and what its telemetry says about its pipeline."""

    proc: Proc
    telemetry: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every pipeline process met
    # Those of ``seen`` still alive when the CLI's exit was first observed (None: not yet).
    outlived: list[str] | None = None

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def running(self) -> bool:
        return self.proc.popen.poll() is None

    def roles(self) -> dict[str, int]:
        """role -> pid of the newest telemetry sample (the supervisor included)."""
        roles: dict[str, int] = {}
        for record in _read_jsonl(self.telemetry):
            if record.get("type") == "sample":
                roles = {role: p["pid"] for role, p in record["processes"].items() if not p["gone"]}
        return roles

    def bytes_done(self) -> int:
        done = 0
        for record in _read_jsonl(self.telemetry):
            if record.get("type") == "progress":
                done = max(done, record["bytes_done"])
        return done

    def child(self, role: str) -> psutil.Process:
        """The live pipeline process ``role``: a ``multiprocessing`` child of this CLI."""
        pid = self.roles().get(role)
        if pid is None:
            raise LookupError(f"no {role} in the telemetry yet")
        proc = psutil.Process(pid)
        if proc.ppid() != self.pid or "multiprocessing" not in " ".join(proc.cmdline()):
            raise AssertionError(
                f"pid {pid} ({role}) is not a multiprocessing child of CLI {self.pid}"
            )
        return proc

    def snapshot(self) -> None:
        """Remember every descendant alive now, to check later that none outlived us.

        Once the CLI has exited, record at once which of them are still alive: a CLI
        must have reaped every process it started (the resource tracker included)
        before it exits, so there is no grace period here.
        """
        if self.outlived is not None:
            return
        if not self.running():
            self.outlived = [_describe(p) for p in self.seen.values() if _alive(p)]
            return
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(self.pid).children(recursive=True):
                self.seen.setdefault(proc.pid, proc)


@dataclass
class Transfer:
    sender: Side
    receiver: Side

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.sender, self.receiver

    def side(self, role: str) -> Side:
        return self.sender if role == "sender" else self.receiver

    def snapshot(self) -> None:
        for side in self.sides:
            side.snapshot()

    def wait_progress(self, at_least: int = 1) -> int:
        """Wait until the receiver has stored ``at_least`` bytes; return how many."""
        deadline = time.monotonic() + PROGRESS_DEADLINE
        while time.monotonic() < deadline:
            done = self.receiver.bytes_done()
            if done >= at_least:
                return done
            if not all(side.running() for side in self.sides):
                break
            time.sleep(POLL)
        raise AssertionError(
            f"the receiver stored no {at_least} bytes within {PROGRESS_DEADLINE} s:\n{self.logs()}"
        )

    def wait_role(self, side: Side, role: str, timeout: float = 15.0) -> psutil.Process:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return side.child(role)
            except (LookupError, psutil.Error):
                if time.monotonic() > deadline or not side.running():
                    raise AssertionError(
                        f"no live {role} under CLI {side.pid} within {timeout} s:\n{self.logs()}"
                    ) from None
            time.sleep(POLL)

    def wait_exit(self, timeout: float = EXIT_DEADLINE) -> tuple[Finished, Finished, float]:
        """Both CLIs' results and how long after the call the later one ended."""
        started = time.monotonic()
        deadline = started + timeout
        while any(side.running() for side in self.sides):
            self.snapshot()
            if time.monotonic() > deadline:
                raise AssertionError(f"still running {timeout} s after the fault:\n{self.logs()}")
            time.sleep(POLL)
        elapsed = time.monotonic() - started
        return self.sender.proc.wait(1), self.receiver.proc.wait(1), elapsed

    def logs(self) -> str:
        return "\n".join(side.proc.text()[-6000:] for side in self.sides)


@contextlib.contextmanager
def transfer(
    tmp_path: Path,
    paths: list[Path],
    out: Path,
    *,
    receiver_extra: tuple[str, ...] = ("--yes",),
    receiver_stdin: int = subprocess.DEVNULL,
) -> Iterator[Transfer]:
    """Start a sender and a receiver with the short deadlines; kill what is left on exit.

    Like ``cli_harness.start_pair``, plus the receiver's stdin (a terminal, to be asked).
    """
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    config = log_dir / "failures.yaml"
    config.write_text(CONFIG)
    code = new_code()
    with Launcher(log_dir) as launcher:
        sender_extra = ["--config", str(config), "--telemetry", str(log_dir / "sender.telemetry")]
        sender = launcher.start(
            "sender",
            "pipeline.cli.send",
            sender_args(paths, code, *sender_extra, "--signal-port", str(free_port())),
        )
        sender.wait_for_output(r"joined the room", 30)
        url = sender.wait_for_output(r"--signal (ws://\S+)", 5, stream="stdout").group(1)
        receiver_extra = (
            *receiver_extra,
            "--config",
            str(config),
            "--telemetry",
            str(log_dir / "receiver.telemetry"),
        )
        receiver = launcher.start(
            "receiver",
            "pipeline.cli.receive",
            receiver_args(code, url, out, *receiver_extra),
            stdin=receiver_stdin,
        )
        yield Transfer(
            Side(sender, log_dir / "sender.telemetry"),
            Side(receiver, log_dir / "receiver.telemetry"),
        )


# -- what a user would check afterwards ----------------------------------------------


def assert_failed(
    result: Finished, who: str, transfer: Transfer, *, exit_code: bool = True
) -> dict[str, Any]:
    """Exit code 1 and a JSON summary that says ``failed``, with a code and a message."""
    if exit_code:
        assert result.returncode == 1, (
            f"{who} exited {result.returncode}, expected 1 (failed):\n{transfer.logs()}"
        )
    summary = result.summary
    assert summary is not None, f"{who} wrote no JSON summary:\n{transfer.logs()}"
    assert summary["outcome"] == "failed" and summary["exit_code"] == 1, summary
    assert summary["error_code"] and summary["message"], summary
    # The reason is on the terminal too, not only in the JSON.
    assert f"failed ({summary['error_code']})" in result.stderr, result.stderr[-3000:]
    return summary


def assert_nothing_half_written(
    out: Path, source_root: Path | None, keep: frozenset[str] = frozenset()
) -> None:
    """Only whole, verified files in ``out`` (A.2 rule 2): no partial, nothing truncated.

    Files that were verified before the failure may stay; each must then be
    byte-identical to its source.  ``keep`` names files the test put there itself.
    """
    if not out.exists():
        return
    received = {rel: v for rel, v in tree_digest(out).items() if rel not in keep}
    partials = [rel for rel in received if rel.endswith(".part")]
    assert not partials, f"partial files left in {out}: {partials}"
    sources = tree_digest(source_root) if source_root is not None else {}
    for rel, (size, digest) in received.items():
        assert sources.get(rel) == (size, digest), (
            f"{out / rel} is not a verified copy of its source ({size} bytes)"
        )


def assert_no_leftovers(transfer: Transfer) -> None:
    """No process of either pipeline outlived its CLI; no ring segment of theirs remains.

    The suite's fixture checks the same for descendants of the test process, but
    a worker orphaned by its CLI's exit is no longer one: this check still sees it.
    """
    outlived = {}
    for name, side in zip(("sender", "receiver"), transfer.sides, strict=True):
        side.snapshot()
        outlived[name] = side.outlived
        assert side.seen, f"no descendant of the {name} CLI was ever seen: the check would be empty"
    alive = [p for side in transfer.sides for p in side.seen.values() if _alive(p)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not any(outlived.values()), f"processes alive after their CLI exited: {outlived}"
    assert not alive, f"pipeline processes outlived their CLI: {[_describe(p) for p in alive]}"
    prefixes = tuple(f"pxfer-{side.pid}-" for side in transfer.sides)
    leftover = [name for name in os.listdir(SHM_DIR) if name.startswith(prefixes)]
    assert not leftover, f"shared-memory segments left in {SHM_DIR}: {leftover}"


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:120]})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. SIGKILL of one pipeline process, either side ----------------------------------

VICTIMS = {
    ("sender", "connection"): "connection",
    ("sender", "worker"): "reader",
    ("sender", "hasher"): "hasher",
    ("receiver", "connection"): "connection",
    ("receiver", "worker"): "writer",
    ("receiver", "hasher"): "hasher",
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small media tree plus one 128 MiB video: 8 s or more at loopback speed (10-15 MB/s),
    so a kill up to 2.5 s after the first stored bytes is still mid-transfer."""
    root = tmp_path_factory.mktemp("source") / "media"
    generate_media_tree(
        root,
        seed=4,
        small_files=12,
        small_size_range=(0, 32 * 1024),
        large_files=1,
        large_size=MEDIA_LARGE,
    )
    return root


@pytest.mark.parametrize(("side", "kind"), list(VICTIMS), ids=[f"{s}-{k}" for s, k in VICTIMS])
def test_sigkill_mid_transfer_fails_both_sides_cleanly(
    tmp_path: Path, media: Path, side: str, kind: str
) -> None:
    role = VICTIMS[side, kind]
    rng = random.Random()
    delay = rng.uniform(0.0, 2.5)
    out = tmp_path / "received"
    with transfer(tmp_path, [media], out) as t:
        t.wait_progress()
        victim = t.wait_role(t.side(side), role)
        time.sleep(delay)  # a random moment of the transfer, not a synchronisation
        t.snapshot()
        assert t.receiver.bytes_done() < MEDIA_LARGE, (
            "the transfer finished before the kill: make the file bigger"
        )
        victim.send_signal(signal.SIGKILL)
        sender, receiver, elapsed = t.wait_exit()
        context = f"SIGKILL {side} {role} (pid {victim.pid}) {delay:.2f} s after progress; both ended {elapsed:.1f} s later"
        print(context)  # shown with -s or on failure

        summaries = {
            "sender": assert_failed(sender, "sender", t),
            "receiver": assert_failed(receiver, "receiver", t),
        }
        ours, peer = summaries[side], summaries["receiver" if side == "sender" else "sender"]
        # The side that lost a process says which one.
        assert ours["error_code"] == "internal" and not ours["by_peer"], (context, ours)
        assert f"{role} process" in ours["message"], (context, ours["message"])
        if role == "connection":
            # Its peer hears nothing more: the watchdog, then the reconnect deadline.
            assert peer["error_code"] == "timeout" and not peer["by_peer"], (context, peer)
        else:
            # The connection process is alive and tells the peer (error frame).
            assert peer["by_peer"] and peer["error_code"] == "internal", (context, peer)
            assert f"{role} process" in peer["message"], (context, peer["message"])
        # Every process the supervisor started is reaped: the victim by signal, the rest by 0.
        codes = ours["process_exit_codes"]
        assert codes[role] == -signal.SIGKILL, (context, codes)
        assert_nothing_half_written(out, media.parent)
    assert_no_leftovers(t)


@pytest.mark.parametrize("role", ["writer", "hasher", "connection"])
def test_ctrl_c_then_sigkill_of_a_receiver_process_leaves_nothing_running(
    tmp_path: Path, media: Path, role: str
) -> None:
    """Ctrl-C on the receiver mid-transfer, and while it winds down one of its processes
    is SIGKILLed: both CLIs end, and when each exits every process it started (workers,
    connection process, multiprocessing's resource tracker) is already gone."""
    out = tmp_path / "received"
    rng = random.Random()
    with transfer(tmp_path, [media], out) as t:
        t.wait_progress()
        victim = t.wait_role(t.receiver, role)
        t.snapshot()
        t.receiver.proc.popen.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.0, 0.5))  # somewhere in the cancel, not a synchronisation
        t.snapshot()
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
        sender, receiver, _ = t.wait_exit()
        # Cancelled by the user (130) or, if the kill won, failed (1); never anything else.
        assert receiver.returncode in (1, 130), t.logs()
        assert sender.returncode in (1, 130), t.logs()
        assert_nothing_half_written(out, media.parent)
    assert_no_leftovers(t)


# -- 2. the receiver's disk fills up during the transfer ------------------------------




def _take_all_but(path: Path, left: int) -> int:
    """Fill ``path``'s file system up to ``left`` free bytes with someone else's file.

    The receiver writes while this runs, so the space is reserved in one step
    (``posix_fallocate``, retried on a fresh reading if the receiver won the race)
    and only then filled with data. Returns the file's size.
    """
    for _ in range(20):
        size = shutil.disk_usage(path.parent).free - left
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            continue
        else:
            data = random.Random(5).randbytes(size)
            written = os.pwrite(fd, data, 0)  # into space already allocated: cannot run out
            assert written == size, (written, size)
            return size
        finally:
            os.close(fd)
    raise AssertionError(f"could not reserve space on {path.parent}: the receiver kept taking it")


def test_disk_full_on_the_receiver_fails_and_names_the_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    generate_media_tree(
        source, seed=5, small_files=0, large_files=1, large_size=30 * MiB, unicode=False
    )
    video = "source/Videos/2024/clip_001.mp4"
    with small_tmpfs(tmp_path / "disk", "40m") as disk:
        filler = disk / "filler.bin"
        with transfer(tmp_path, [source], disk) as t:
            # 30 MiB fit in the 40 MiB disk when the receiver checks (A.2 rule 3) ...
            t.wait_progress()
            # ... but not once someone else has taken all but 6 MiB of what is free now
            # (at most ~17 MiB written so far, so over 13 MiB are still to come).
            filler_size = _take_all_but(filler, 6 * MiB)
            filler_digest = _sha256(filler)
            t.snapshot()
            sender, receiver, _ = t.wait_exit()
            rx = assert_failed(receiver, "receiver", t)
            tx = assert_failed(sender, "sender", t)
            assert rx["error_code"] in ("no_space", "io_error") and not rx["by_peer"], rx
            assert video in rx["message"] and "No space left" in rx["message"], rx["message"]
        assert _sha256(filler) == filler_digest and filler.stat().st_size == filler_size
        assert_nothing_half_written(disk, None, keep=frozenset({"filler.bin"}))
        assert sorted(os.listdir(disk)) == ["filler.bin"], (
            "the receiver left directories it created"
        )
    assert_no_leftovers(t)
    # The sender's user learns why: the receiver's disk is full, and which file.
    assert (
        tx["by_peer"] and tx["error_code"] == rx["error_code"] and "clip_001.mp4" in tx["message"]
    ), f"sender reports {tx['error_code']}: {tx['message']}"


# -- 3. a source file changes size while it is read -----------------------------------


@pytest.mark.parametrize("change", ["shrinks", "grows"])
def test_source_file_changing_size_fails_the_transfer(tmp_path: Path, change: str) -> None:
    source = tmp_path / "source"
    generate_media_tree(
        source, seed=6, small_files=0, large_files=1, large_size=48 * MiB, unicode=False
    )
    video = source / "Videos" / "2024" / "clip_001.mp4"
    out = tmp_path / "received"
    with transfer(tmp_path, [source], out) as t:
        # The reader runs at most a ring (12 MiB) ahead of what the receiver stored,
        # so it has not reached the middle, let alone the end, of the file yet.
        t.wait_progress()
        if change == "shrinks":
            os.truncate(video, 24 * MiB)
        else:
            with video.open("ab") as f:
                f.write(b"appended while being sent\n")
        t.snapshot()
        sender, receiver, _ = t.wait_exit()
        tx = assert_failed(sender, "sender", t)
        rx = assert_failed(receiver, "receiver", t)
        assert tx["error_code"] == "io_error" and not tx["by_peer"], tx
        past = {"shrinks": "shrank", "grows": "grew"}[change]
        assert str(video) in tx["message"] and past in tx["message"], tx["message"]
        assert (
            rx["by_peer"] and rx["error_code"] == "io_error" and "clip_001.mp4" in rx["message"]
        ), rx
        # ... by its name in the transfer: where it lives on the sender stays there.
        assert "source/Videos/2024/clip_001.mp4" in rx["message"] and str(tmp_path) not in rx["message"], rx
        assert_nothing_half_written(out, None)
    assert_no_leftovers(t)


# -- 4. a worker dies before any data moved -------------------------------------------


@pytest.mark.parametrize("role", ["reader", "hasher"])
def test_sender_worker_dying_before_the_transfer_starts(
    tmp_path: Path, media: Path, role: str
) -> None:
    """The receiver is still asking its user (on a terminal) whether to accept; the
    sender's workers already run.  One dies: both sides fail, the prompt does not
    keep the receiver waiting."""
    master, slave = os.openpty()
    out = tmp_path / "received"
    try:
        with transfer(tmp_path, [media], out, receiver_extra=(), receiver_stdin=slave) as t:
            os.close(slave)
            slave = -1
            t.receiver.proc.wait_for_output(r"Accept\? \[y/N\]", 30, stream="stdout")
            victim = t.wait_role(t.sender, role)
            t.snapshot()
            assert t.receiver.bytes_done() == 0
            victim.send_signal(signal.SIGKILL)
            sender, receiver, _ = t.wait_exit()
            tx = assert_failed(sender, "sender", t)
            rx = assert_failed(receiver, "receiver", t, exit_code=False)
            assert tx["error_code"] == "internal" and f"{role} process" in tx["message"], tx
            assert rx["by_peer"] and f"{role} process" in rx["message"], rx
            assert tx["process_exit_codes"][role] == -signal.SIGKILL, tx["process_exit_codes"]
            assert_nothing_half_written(out, None)
        assert_no_leftovers(t)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    # Asking on the terminal does not get in the way of ending (it once aborted at exit).
    assert receiver.returncode == 1, f"receiver exited {receiver.returncode}:\n{receiver.stderr[-1500:]}"
