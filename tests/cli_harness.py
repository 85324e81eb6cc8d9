"""Run the real CLIs as separate processes, the way a user would.

``Transfer`` starts ``pipeline-send`` (optionally with a standalone
``pipeline-signal``), waits until the sender has joined its room, starts
``pipeline-receive``, and collects both exit codes, outputs and JSON summaries.
Every process it starts is killed and reaped on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PYTHON = sys.executable
# Seconds a CLI gets to end cancelled on close before it is killed: a cancel takes the
# supervisor's cancel grace (8 s) plus its cleanup, at worst.
INTERRUPT_GRACE = 20.0
_counter = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_code() -> str:
    global _counter
    _counter += 1
    letters = "abcdefghijklmnopqrstuvwxyz"
    suffix = letters[_counter % 26] + letters[(_counter // 26) % 26]
    return f"{os.getpid() % 1000}-test-room-{suffix}"


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    log_dir: Path
    json_path: Path | None = None

    def wait(self, timeout: float) -> Finished:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not finish within {timeout} s:\n{self.text()}") from None
        summary = None
        if self.json_path is not None and self.json_path.exists():
            summary = json.loads(self.json_path.read_text())
        return Finished(self.popen.returncode, self.stdout(), self.stderr(), summary)

    def stdout(self) -> str:
        return (self.log_dir / f"{self.name}.out").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / f"{self.name}.err").read_text(errors="replace")

    def text(self) -> str:
        return f"--- {self.name} stdout\n{self.stdout()}\n--- {self.name} stderr\n{self.stderr()}"

    def wait_for_output(self, pattern: str, timeout: float, stream: str = "stderr") -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr() if stream == "stderr" else self.stdout()
            match = re.search(pattern, text)
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {pattern!r} within {timeout} s:\n{self.text()}")


@dataclass
class Launcher:
    """Starts CLI processes in ``log_dir``; kills whatever is left on ``close``."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    prefix: Sequence[str] = ()  # e.g. ("ip", "netns", "exec", "peer-a") or a netlab runner
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, module: str, args: Sequence[str], *, json_out: bool = True, stdin: int | None = subprocess.DEVNULL) -> Proc:
        json_path = self.log_dir / f"{name}.json" if json_out else None
        argv = [*self.prefix, PYTHON, "-m", module, *args]
        if json_path is not None:
            argv += ["--json", str(json_path)]
        out = open(self.log_dir / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        err = open(self.log_dir / f"{name}.err", "w")  # noqa: SIM115
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        popen = subprocess.Popen(argv, stdout=out, stderr=err, stdin=stdin, text=True, env=env, cwd=self.log_dir)
        out.close()
        err.close()
        proc = Proc(name, popen, self.log_dir, json_path)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        # Ctrl-C first, as a user would: the CLI then stops its processes and unlinks
        # its shared memory itself (a SIGKILLed supervisor cannot), so a test that
        # failed midway does not also report leaks that are only the harness's doing.
        running = [proc for proc in self.procs if proc.popen.poll() is None]
        for proc in running:
            proc.popen.send_signal(signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)
        # Children of a killed CLI (connection, workers) notice their parent is
        # gone through their pipes; give them a moment to exit.
        time.sleep(0.2)

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sender_args(paths: Sequence[str | Path], code: str, *extra: str) -> list[str]:
    return [*map(str, paths), "--code", code, "--progress", "lines", *extra]


def receiver_args(code: str, url: str, out: str | Path, *extra: str) -> list[str]:
    return [code, "--signal", url, "--out", str(out), "--progress", "lines", *extra]


def start_pair(
    launcher: Launcher,
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    sender_extra: Sequence[str] = (),
    receiver_extra: Sequence[str] = ("--yes",),
    url: str | None = None,
    receiver_stdin: int | None = subprocess.DEVNULL,
) -> tuple[Proc, Proc]:
    """Start a sender (embedded signaling unless ``url``), wait for its room, start the receiver."""
    code = new_code()
    extra = list(sender_extra)
    if url is not None:
        extra += ["--signal", url]
    else:
        extra += ["--signal-port", str(free_port())]
    sender = launcher.start("sender", "pipeline.cli.send", sender_args(paths, code, *extra))
    sender.wait_for_output(r"joined the room", 30)
    if url is None:
        url = sender.wait_for_output(r"--signal (ws://\S+)", 5, stream="stdout").group(1)
    receiver = launcher.start(
        "receiver", "pipeline.cli.receive", receiver_args(code, url, out, *receiver_extra), stdin=receiver_stdin
    )
    return sender, receiver


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (root only; skips otherwise); always unmounted."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "pxfer-test", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
