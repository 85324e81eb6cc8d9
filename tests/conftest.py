"""Suite-wide guards.

Every test runs under :func:`no_leaked_resources`: it fails if, once the test is
over, a new entry remains in ``/dev/shm`` or a child process it started is still
alive (Appendix A.2 rule 2: every worker reaped, every segment unlinked).
Processes get a short grace period to exit and be reaped; whatever is left
after it is killed / unlinked so that the next test starts clean.
"""

from __future__ import annotations

import contextlib
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import re
import time
from collections.abc import Iterator

import psutil
import pytest

SHM_DIR = "/dev/shm"
GRACE_SECONDS = 2.0
POLL_SECONDS = 0.05
# Segments of this project embed the creating process's pid.
_PXFER_NAME = re.compile(r"^pxfer-(\d+)-")


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return set()


def _helper_pids() -> set[int]:
    """multiprocessing's long-lived helpers, started once and kept for the session."""
    pids = set()
    tracker = getattr(multiprocessing.resource_tracker, "_resource_tracker", None)
    pids.add(getattr(tracker, "_pid", None))
    forkserver = getattr(multiprocessing.forkserver, "_forkserver", None)
    pids.add(getattr(forkserver, "_forkserver_pid", None))
    return {pid for pid in pids if isinstance(pid, int)}


def _live_children() -> dict[int, psutil.Process]:
    """Descendants of this process that still run (zombies are dead already)."""
    live = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                live[proc.pid] = proc
    return live


def _foreign_segment(name: str, ours: set[int]) -> bool:
    """A ``pxfer-<pid>-`` segment whose creator is alive and not ours belongs to
    another test run on the same machine, not to a leak of this test."""
    match = _PXFER_NAME.match(name)
    if match is None:
        return False
    pid = int(match.group(1))
    return pid not in ours and psutil.pid_exists(pid)


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} {' '.join(proc.cmdline())[:200]!r}"
    except psutil.Error:
        return f"pid {proc.pid}"


@pytest.fixture(autouse=True)
def no_leaked_resources() -> Iterator[None]:
    shm_before = _shm_entries()
    children_before = {pid: _create_time(proc) for pid, proc in _live_children().items()}
    yield

    def leftovers() -> tuple[set[str], list[psutil.Process]]:
        helpers = _helper_pids()
        children = [
            proc
            for pid, proc in _live_children().items()
            if pid not in helpers and children_before.get(pid) != _create_time(proc)
        ]
        ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
        shm = {name for name in _shm_entries() - shm_before if not _foreign_segment(name, ours)}
        return shm, children

    deadline = time.monotonic() + GRACE_SECONDS
    shm, children = leftovers()
    while (shm or children) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        shm, children = leftovers()
    if not (shm or children):
        return

    described = [_describe(proc) for proc in children]
    for proc in children:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # Wait for them to die without reaping them (os.waitpid): reaping belongs
    # to whoever started them, e.g. a multiprocessing.Process or subprocess.Popen.
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and any(_alive(proc) for proc in children):
        time.sleep(POLL_SECONDS)
    for name in shm:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(SHM_DIR, name))
    problems = []
    if shm:
        problems.append(f"shared-memory segments left in {SHM_DIR}: {sorted(shm)}")
    if children:
        problems.append("child processes still alive (now killed): " + "; ".join(described))
    pytest.fail("test leaked resources: " + " | ".join(problems), pytrace=False)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _create_time(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:
        return None
