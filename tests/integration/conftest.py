"""Fixtures shared by the real-process CLI tests (``tests/cli_harness.py``).

``launcher``: a :class:`~tests.cli_harness.Launcher` writing into ``tmp_path/logs``.
When the test ends (typically: failed) with a CLI still running, that CLI first
gets SIGINT, as a user would press Ctrl-C, and some seconds to clean up; only
then does the launcher SIGKILL what is left.  A SIGKILLed CLI cannot unlink its
shared-memory ring, and the leak check would then report that instead of the
test's own failure.

``signal_server``: a standalone ``pipeline-signal`` on a free port of 127.0.0.1,
started through ``launcher``; ``stop()`` ends it with SIGINT and returns the
per-room relay figures it logged when each room closed.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_harness import Launcher, Proc, free_port

# pipeline/signaling/server.py logs this at INFO when a room is forgotten.
ROOM_CLOSED = re.compile(r"room #(\d+) closed[^:]*: relayed (\d+) signal messages, (\d+) bytes")


@dataclass(frozen=True)
class RoomRelay:
    number: int
    messages: int
    bytes: int


@dataclass
class SignalServer:
    proc: Proc
    url: str

    def stop(self, timeout: float = 15.0) -> list[RoomRelay]:
        """SIGINT, wait for exit 0, return what each closed room relayed."""
        self.proc.popen.send_signal(signal.SIGINT)
        finished = self.proc.wait(timeout)
        assert finished.returncode == 0, self.proc.text()
        return [RoomRelay(*map(int, m.groups())) for m in ROOM_CLOSED.finditer(finished.stderr)]


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """A Launcher in ``tmp_path/logs``; on close it interrupts, then kills, what is left."""
    logs = tmp_path / "logs"
    logs.mkdir()
    with Launcher(logs) as launched:
        yield launched


@pytest.fixture
def signal_server(launcher: Launcher) -> SignalServer:
    proc = launcher.start(
        "signal", "pipeline.cli.signal_server", ["--port", str(free_port())], json_out=False
    )
    url = proc.wait_for_output(r"listening on (ws://\S+)", 20, stream="stdout").group(1)
    return SignalServer(proc, url)
