"""How a session ends when the link drops during its closing exchange (docs/protocol.md,
"The link drops at the very end"), with real processes: our sender against
``tests/rogue_peer.py --act vanish``, a receiver that verifies every file and then
disappears without ``done_ack``."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cli_harness import Launcher
from tests.integration.conftest import SignalServer
from tests.integration.test_cli_errors import frames_received, logs, start_against_rogue

RECONNECT_DEADLINE = 60.0  # ice.reconnect_timeout's default, which must not be what ended it


def test_a_receiver_that_verified_everything_and_left_completes_the_sender(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer
) -> None:
    ours, rogue, _ = start_against_rogue(tmp_path, launcher, signal_server, "receiver", "vanish")
    rogue.wait_for_output(r"vanished", 60, stream="stdout")
    gone = time.monotonic()
    finished = ours.wait(RECONNECT_DEADLINE + 30)
    waited = time.monotonic() - gone

    # Every file_result said verified; only done_ack never came: completed, exit 0.
    assert finished.returncode == 0, logs(finished)
    assert finished.summary is not None
    assert finished.summary["outcome"] == "completed", finished.summary
    assert "the receiver left before the session's last frame arrived" in finished.summary["message"]
    results = [f for f in frames_received(rogue) if f["t"] == "done"]
    assert len(results) == 1, "the rogue saw done and left"
    # The room's news ended it, not the reconnect deadline.
    assert waited < RECONNECT_DEADLINE / 2, f"the sender took {waited:.1f} s after the receiver left"
