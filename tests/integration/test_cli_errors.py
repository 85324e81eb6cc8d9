"""How the real CLIs end when a transfer cannot or must not happen (issue 3).

Every test runs ``pipeline-send``/``pipeline-receive`` (and, where needed, a
standalone ``pipeline-signal``) as processes through ``tests/cli_harness.py`` and
checks what the user sees:

* the exit code of Appendix A.2: completed 0, failed 1, usage/config 2,
  no_route 3, hash_mismatch 4, rejected 5, cancelled 130;
* a message that says why, in words (and, for config errors, one line that names
  the file or flag and the field);
* ``--out`` exactly as it was: no partial file (``.<name>.<token>.part``), no new
  directory, no existing file touched unless ``--overwrite``/``--rename`` asked.

The autouse fixture in ``tests/conftest.py`` adds: no ``/dev/shm`` segment and no
process of either pipeline outlives the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.mediagen import generate_media_tree
from tests.cli_harness import (
    Finished,
    Launcher,
    Proc,
    new_code,
    receiver_args,
    small_tmpfs,
    start_pair,
)

if TYPE_CHECKING:
    from tests.integration.conftest import SignalServer

pytestmark = pytest.mark.slow

KiB = 1024
MiB = 1024 * KiB
EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED, EXIT_CANCELLED = 0, 1, 2, 5, 130
SESSION_DEADLINE = 60.0  # s for a short session to end on a busy machine
USAGE_DEADLINE = 30.0  # s for a CLI to refuse its arguments (interpreter start included)
CANCEL_DEADLINE = 15.0  # s from SIGINT to both CLIs' exit
UNKNOWN_CODE_DEADLINE = 20.0  # s for a receiver to give up on a code nobody waits under
PROGRESS_DEADLINE = 45.0  # s from the receiver's start to its first received bytes
SEND = "pipeline.cli.send"
RECEIVE = "pipeline.cli.receive"


# -- what --out holds ---------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: directories as ``"dir"``, files by SHA-256."""
    if not root.exists():
        return {}
    entries = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            entries[rel] = "dir"
        else:
            entries[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def ancestors(paths: Iterable[str]) -> set[str]:
    return {"/".join(p.split("/")[:depth]) for p in paths for depth in range(1, p.count("/") + 1)}


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.part")] if root.exists() else []


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def logs(*finished: Finished) -> str:
    return "\n".join(f"--- exit {f.returncode}\n{f.stdout}\n{f.stderr}" for f in finished)


def finish(sender: Proc, receiver: Proc, deadline: float = SESSION_DEADLINE) -> tuple[Finished, Finished]:
    received = receiver.wait(deadline)
    sent = sender.wait(deadline)
    return sent, received


def run_cli(launcher: Launcher, name: str, module: str, args: list[str]) -> Finished:
    return launcher.start(name, module, args, json_out=False).wait(USAGE_DEADLINE)


# -- the receiver says no ------------------------------------------------------------------


def test_receiver_without_a_terminal_declines_unless_told_yes(tmp_path: Path, launcher: Launcher) -> None:
    write_random(tmp_path / "src" / "report.pdf", 200 * KiB)
    out = tmp_path / "out"  # does not exist: the receiver makes it, and removes it again

    # stdin is /dev/null: nobody could answer "Accept? [y/N]".
    sender, receiver = start_pair(launcher, [tmp_path / "src"], out, receiver_extra=())
    sent, received = finish(sender, receiver)

    assert (received.returncode, sent.returncode) == (EXIT_REJECTED, EXIT_REJECTED), logs(sent, received)
    assert "no terminal to ask on; run with --yes" in received.stderr, received.stderr
    assert "Offered: 1 files" in received.stderr  # it did show what it refused
    assert re.search(r"receiver declined", sent.stderr), sent.stderr
    assert sent.summary is not None and received.summary is not None
    assert (sent.summary["outcome"], received.summary["outcome"]) == ("rejected", "rejected")
    assert sent.summary["by_peer"] is True and received.summary["by_peer"] is False
    assert not out.exists(), snapshot(out)


@pytest.mark.parametrize(("answer", "accepted"), [("y", True), ("YES", True), ("n", False), ("", False)])
def test_receiver_on_a_terminal_asks_and_does_what_it_is_told(
    tmp_path: Path, launcher: Launcher, answer: str, accepted: bool
) -> None:
    data = write_random(tmp_path / "src" / "report.pdf", 300 * KiB)
    out = tmp_path / "out"
    master, slave = os.openpty()
    try:
        sender, receiver = start_pair(launcher, [tmp_path / "src"], out, receiver_extra=(), receiver_stdin=slave)
        os.close(slave)
        slave = -1
        receiver.wait_for_output(r"Accept\? \[y/N\] ", PROGRESS_DEADLINE, stream="stdout")
        # --out is made up front (to know it is writable) but holds nothing yet.
        assert snapshot(out) == {}, "something was written before the user answered"
        os.write(master, f"{answer}\n".encode())
        sent, received = finish(sender, receiver)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)

    if accepted:
        assert (received.returncode, sent.returncode) == (EXIT_COMPLETED, EXIT_COMPLETED), logs(sent, received)
        assert (out / "src" / "report.pdf").read_bytes() == data
    else:
        assert (received.returncode, sent.returncode) == (EXIT_REJECTED, EXIT_REJECTED), logs(sent, received)
        assert "declined by the user" in received.stderr, received.stderr
        assert not out.exists(), snapshot(out)


def test_a_quiet_receiver_still_shows_the_offer_before_it_asks(tmp_path: Path, launcher: Launcher) -> None:
    """--quiet silences progress, not the question: nobody can answer "Accept?"
    about an offer they have not seen."""
    write_random(tmp_path / "src" / "report.pdf", 300 * KiB)
    out = tmp_path / "out"
    master, slave = os.openpty()
    try:
        sender, receiver = start_pair(
            launcher, [tmp_path / "src"], out, receiver_extra=("--quiet",), receiver_stdin=slave
        )
        os.close(slave)
        slave = -1
        receiver.wait_for_output(r"Accept\? \[y/N\] ", PROGRESS_DEADLINE, stream="stdout")
        shown = receiver.stderr()
        os.write(master, b"n\n")
        sent, received = finish(sender, receiver)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)

    assert "Offered: 1 files, 300.0 KiB\n  src/  (1 files)\n" in shown, shown
    assert (received.returncode, sent.returncode) == (EXIT_REJECTED, EXIT_REJECTED), logs(sent, received)
    assert "connecting" not in received.stderr, received.stderr  # status lines stay quiet


# -- a file that already exists --------------------------------------------------------------


def conflict_setup(tmp_path: Path) -> tuple[Path, Path, bytes, bytes]:
    """``src/clip.mp4`` (new bytes) and ``out/clip.mp4`` (old bytes)."""
    new = write_random(tmp_path / "src" / "clip.mp4", 1 * MiB + 17)
    old = write_random(tmp_path / "out" / "clip.mp4", 50 * KiB)
    return tmp_path / "src" / "clip.mp4", tmp_path / "out", new, old


def test_an_existing_file_is_not_overwritten_by_default(tmp_path: Path, launcher: Launcher) -> None:
    source, out, _new, old = conflict_setup(tmp_path)
    before = snapshot(out)

    sender, receiver = start_pair(launcher, [source], out)
    sent, received = finish(sender, receiver)

    assert (received.returncode, sent.returncode) == (EXIT_REJECTED, EXIT_REJECTED), logs(sent, received)
    assert "already exist" in received.stderr and "clip.mp4" in received.stderr, received.stderr
    assert "--overwrite" in received.stderr and "--rename" in received.stderr
    assert "receiver declined" in sent.stderr, sent.stderr
    assert (out / "clip.mp4").read_bytes() == old
    assert snapshot(out) == before


def test_overwrite_replaces_an_existing_file(tmp_path: Path, launcher: Launcher) -> None:
    source, out, new, _old = conflict_setup(tmp_path)

    sender, receiver = start_pair(launcher, [source], out, receiver_extra=("--yes", "--overwrite"))
    sent, received = finish(sender, receiver)

    assert (received.returncode, sent.returncode) == (EXIT_COMPLETED, EXIT_COMPLETED), logs(sent, received)
    assert os.listdir(out) == ["clip.mp4"]
    assert (out / "clip.mp4").read_bytes() == new
    assert received.summary is not None and received.summary["files_verified"] == 1
    # Stored under its own name: the summary records no other name for it.
    assert received.summary["file_outcomes"] == [{"path": "clip.mp4", "outcome": "verified"}]
    assert received.summary["connection"]["final_paths"] == {}


def test_rename_keeps_both_files(tmp_path: Path, launcher: Launcher) -> None:
    source, out, new, old = conflict_setup(tmp_path)

    sender, receiver = start_pair(launcher, [source], out, receiver_extra=("--yes", "--rename"))
    sent, received = finish(sender, receiver)

    assert (received.returncode, sent.returncode) == (EXIT_COMPLETED, EXIT_COMPLETED), logs(sent, received)
    assert sorted(os.listdir(out)) == ["clip (1).mp4", "clip.mp4"]
    assert (out / "clip.mp4").read_bytes() == old
    assert (out / "clip (1).mp4").read_bytes() == new
    assert received.summary is not None
    assert received.summary["file_outcomes"] == [{"path": "clip (1).mp4", "outcome": "verified"}]
    assert received.summary["connection"]["final_paths"] == {"0": "clip (1).mp4"}


# -- cancel (SIGINT) from either side -------------------------------------------------------------

# Small chunks and a tiny window slow the transfer down (a few MB/s) so that it
# is still running when the signal arrives, even on a fast machine.
SLOW = ("--chunk-size", "4KiB", "--window", "4")
RECEIVED_BYTES = re.compile(r"receiving +[\d.]+% \[[^\]]*\] ([\d.]+) (B|KiB|MiB|GiB) /")


def wait_for_received_bytes(receiver: Proc, timeout: float) -> None:
    """Until the receiver's progress bar shows more than 0 bytes received."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(float(m.group(1)) > 0 for m in RECEIVED_BYTES.finditer(receiver.stderr())):
            return
        if receiver.popen.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"the receiver showed no received bytes within {timeout} s:\n{receiver.text()}")


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_ctrl_c_on_either_side_cancels_both(tmp_path: Path, launcher: Launcher, side: str) -> None:
    source = tmp_path / "src" / "footage"
    generate_media_tree(source, seed=1, small_files=3, large_files=1, large_size=48 * MiB)
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    out = tmp_path / "out"
    out.mkdir()

    sender, receiver = start_pair(
        launcher,
        [source],
        out,
        sender_extra=SLOW,
        receiver_extra=("--yes", "--progress", "bar", *SLOW),
    )
    wait_for_received_bytes(receiver, PROGRESS_DEADLINE)
    interrupted, other = (sender, receiver) if side == "sender" else (receiver, sender)
    interrupted.popen.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    first = interrupted.wait(CANCEL_DEADLINE)
    second = other.wait(max(1.0, CANCEL_DEADLINE - (time.monotonic() - signalled)))

    assert (first.returncode, second.returncode) == (EXIT_CANCELLED, EXIT_CANCELLED), logs(first, second)
    assert first.summary is not None and second.summary is not None
    assert (first.summary["outcome"], second.summary["outcome"]) == ("cancelled", "cancelled")
    assert first.summary["by_peer"] is False and second.summary["by_peer"] is True
    assert "cancelled" in first.stderr and "cancelled" in second.stderr
    received = first.summary if side == "receiver" else second.summary
    assert 0 < received["bytes_transferred"] < total, received  # stopped mid-transfer
    assert not partials(out), partials(out)
    # A.2 rule 2: files verified before the cancel stay (whole and correct); the
    # unfinished one is gone, and so is every directory that only it needed.
    left = snapshot(out)
    sent_files = {f"footage/{rel}": digest for rel, digest in snapshot(source).items() if digest != "dir"}
    kept = {rel: digest for rel, digest in left.items() if digest != "dir"}
    assert all(sent_files.get(rel) == digest for rel, digest in kept.items()), left
    assert len(kept) < len(sent_files), left
    assert {rel for rel, digest in left.items() if digest == "dir"} == ancestors(kept), left


# -- configuration and usage errors (exit 2, before any session) ---------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        pytest.param("transfer:\n  windw: 64\n", "transfer.windw", id="typo"),
        pytest.param(
            "channel:\n  max_retransmits: 5\n  max_packet_life_time: 2000\n",
            "channel.max_packet_life_time",
            id="two-reliability-limits",
        ),
    ],
)
@pytest.mark.parametrize("module", [SEND, RECEIVE])
def test_a_bad_config_file_is_one_line_naming_file_and_field(
    tmp_path: Path, launcher: Launcher, module: str, yaml_text: str, field: str
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(yaml_text)
    (tmp_path / "a.txt").write_text("hello")
    out = tmp_path / "out"
    if module == SEND:
        args = [str(tmp_path / "a.txt"), "--config", str(config)]
    else:
        args = ["7-orbit-lantern-velvet", "--signal", "ws://127.0.0.1:9/ws", "--out", str(out), "--config", str(config)]

    finished = run_cli(launcher, "cli", module, args)

    assert finished.returncode == EXIT_USAGE, logs(finished)
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert str(config) in lines[0] and field in lines[0], lines[0]
    assert finished.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("module", [SEND, RECEIVE])
def test_a_turn_server_is_refused_because_nothing_relays_file_bytes(
    tmp_path: Path, launcher: Launcher, module: str
) -> None:
    (tmp_path / "a.txt").write_text("hello")
    out = tmp_path / "out"
    if module == SEND:
        args = [str(tmp_path / "a.txt"), "--stun", "turn:x:3478"]
    else:
        args = ["7-orbit-lantern-velvet", "--signal", "ws://127.0.0.1:9/ws", "--out", str(out), "--stun", "turn:x:3478"]

    finished = run_cli(launcher, "cli", module, args)

    assert finished.returncode == EXIT_USAGE, logs(finished)
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert "--stun" in lines[0] and "turn:x:3478" in lines[0]
    assert "TURN is not supported" in lines[0]
    assert re.search(r"never relays file bytes", lines[0]), lines[0]
    assert not out.exists()


def test_a_missing_path_is_a_usage_error(tmp_path: Path, launcher: Launcher) -> None:
    missing = tmp_path / "no such folder"
    finished = run_cli(launcher, "sender", SEND, [str(missing)])

    assert finished.returncode == EXIT_USAGE, logs(finished)
    assert str(missing) in finished.stderr and "No such file" in finished.stderr, finished.stderr
    assert "Sending" not in finished.stdout  # no session, no code printed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["orbit lantern", "--signal", "ws://127.0.0.1:9/ws"], r"not a transfer code", id="malformed-code"),
        pytest.param(["7-orbit-lantern-velvet"], r"--signal", id="no-signal-url"),
        pytest.param(["7-orbit-lantern-velvet", "--signal", "http://x/ws"], r"signal\.url", id="not-a-ws-url"),
        pytest.param(["--signal", "ws://127.0.0.1:9/ws"], r"^pipeline-receive: error: .*required: code", id="no-code"),
        pytest.param(["7-orbit-lantern-velvet", "--bogus"], r"unrecognized arguments: --bogus", id="unknown-option"),
    ],
)
def test_receiver_usage_errors(tmp_path: Path, launcher: Launcher, args: list[str], expected: str) -> None:
    out = tmp_path / "out"
    finished = run_cli(launcher, "receiver", RECEIVE, [*args, "--out", str(out)])

    assert finished.returncode == EXIT_USAGE, logs(finished)
    assert re.search(expected, finished.stderr), finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1, finished.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param([], r"^pipeline-send: error: no PATH given and send\.sources is empty", id="no-path"),
        pytest.param(["a.txt", "--code", "orbit"], r"^pipeline-send: error: --code: signal\.code: not a room code", id="bad-code"),
        pytest.param(["a.txt", "--window"], r"^pipeline-send: error: argument --window: expected one argument", id="no-value"),
    ],
)
def test_sender_usage_errors(tmp_path: Path, launcher: Launcher, args: list[str], expected: str) -> None:
    (tmp_path / "a.txt").write_text("hello")
    finished = run_cli(launcher, "sender", SEND, [str(tmp_path / a) if a == "a.txt" else a for a in args])

    assert finished.returncode == EXIT_USAGE, logs(finished)
    assert len(finished.stderr.strip().splitlines()) == 1, finished.stderr
    assert re.search(expected, finished.stderr), finished.stderr
    assert finished.stdout == ""  # no session, no code printed


# -- nobody on the other side ----------------------------------------------------------------------


def test_a_code_nobody_waits_under_fails_quickly(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer
) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    receiver = launcher.start("receiver", RECEIVE, receiver_args(new_code(), signal_server.url, out, "--yes"))
    finished = receiver.wait(UNKNOWN_CODE_DEADLINE)
    elapsed = time.monotonic() - started

    assert finished.returncode == EXIT_FAILED, logs(finished)
    assert "no sender is waiting under code" in finished.stderr, finished.stderr
    assert finished.summary is not None and finished.summary["outcome"] == "failed"
    assert elapsed < UNKNOWN_CODE_DEADLINE
    assert not out.exists()


# -- a peer that connects but does not play along (tests/rogue_peer.py) --------------------------

HANDSHAKE_TIMEOUT = 3.0  # ice.progress_timeout in these tests: the handshake deadline
EXIT_HASH_MISMATCH = 4


def start_against_rogue(
    tmp_path: Path,
    launcher: Launcher,
    signal_server: SignalServer,
    rogue_role: str,
    act: str,
    *rogue_extra: str,
    receiver_stdin: int | None = None,
) -> tuple[Proc, Proc, Path]:
    """Our CLI on one side, ``tests/rogue_peer.py --act ACT`` on the other; returns
    (ours, rogue, out). Ours runs with a short handshake deadline.  Our receiver
    accepts with ``--yes`` unless ``receiver_stdin`` (a terminal) is given: it asks."""
    out = tmp_path / "out"
    config = launcher.log_dir / "short.yaml"
    config.write_text(f"ice:\n  progress_timeout: {HANDSHAKE_TIMEOUT}\n")
    code = new_code()
    launcher.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    rogue_args = ["--role", rogue_role, "--act", act, "--signal", signal_server.url, "--code", code, *rogue_extra]
    if rogue_role == "receiver":
        write_random(tmp_path / "src" / "clip.mp4", 200 * KiB)
        sender_cmd = [str(tmp_path / "src"), "--code", code, "--signal", signal_server.url, "--config", str(config)]
        ours = launcher.start("sender", SEND, sender_cmd)
        ours.wait_for_output(r"joined the room", 30)
        rogue = launcher.start("rogue", "tests.rogue_peer", rogue_args, json_out=False)
    else:
        rogue = launcher.start("rogue", "tests.rogue_peer", rogue_args, json_out=False)
        rogue.wait_for_output(r"joined the room", 30, stream="stdout")  # the rogue sender made the room
        accept = () if receiver_stdin is not None else ("--yes",)
        receiver_cmd = receiver_args(code, signal_server.url, out, *accept, "--config", str(config))
        ours = launcher.start("receiver", RECEIVE, receiver_cmd, stdin=receiver_stdin or subprocess.DEVNULL)
    rogue.wait_for_output(r"channel open", PROGRESS_DEADLINE, stream="stdout")
    return ours, rogue, out


def frames_received(rogue: Proc) -> list[dict[str, object]]:
    return [json.loads(line)["frame"] for line in rogue.stdout().splitlines() if line.startswith('{"frame"')]


@pytest.mark.parametrize(
    ("rogue_role", "act", "expected"),
    [
        ("receiver", "mute", "the receiver opened the connection but sent no hello within 3 s"),
        ("sender", "mute", "the sender opened the connection but sent no hello within 3 s"),
        ("sender", "hello", "the sender said hello but then sent nothing of its manifest for 3 s"),
    ],
    ids=["mute-receiver", "mute-sender", "sender-without-manifest"],
)
def test_a_peer_that_connects_and_stays_silent_is_given_up_on(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer, rogue_role: str, act: str, expected: str
) -> None:
    """The link works (the rogue answers ICE consent checks), so only the handshake
    watchdog can end this: failed, code timeout, in words, nothing written."""
    ours, rogue, out = start_against_rogue(tmp_path, launcher, signal_server, rogue_role, act)
    opened = time.monotonic()
    finished = ours.wait(SESSION_DEADLINE)
    waited = time.monotonic() - opened

    assert finished.returncode == EXIT_FAILED, logs(finished)
    assert finished.summary is not None
    assert (finished.summary["outcome"], finished.summary["error_code"]) == ("failed", "timeout"), finished.summary
    assert expected in finished.summary["message"], finished.summary["message"]
    assert "xfer/1" in finished.stderr, finished.stderr
    assert rogue.popen.poll() is None, "the silent peer was meant to stay connected"
    # The watchdog, not ICE consent (about 30 s) or the reconnect deadline (60 s), ended it.
    assert waited < HANDSHAKE_TIMEOUT + 10, f"gave up {waited:.1f} s after the channel opened"
    assert not out.exists() or snapshot(out) == {}, snapshot(out)


@pytest.mark.parametrize("path", ["../escaped.txt", "/tmp/absolute.txt", "a/../../escaped.txt", "a\\b.txt", "C:x"])
def test_a_hostile_manifest_writes_nothing(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer, path: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"already here")
    before = snapshot(out)
    around = sorted(p.name for p in tmp_path.iterdir())
    ours, rogue, _ = start_against_rogue(tmp_path, launcher, signal_server, "sender", "manifest", "--path", path)
    finished = ours.wait(SESSION_DEADLINE)

    assert finished.returncode == EXIT_FAILED, logs(finished)
    assert finished.summary is not None and finished.summary["error_code"] == "bad_path", finished.summary
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == around  # nothing escaped beside --out
    assert not Path("/tmp/absolute.txt").exists()
    # The peer was told why, with the appendix's code, and was never accepted.
    frames = frames_received(rogue)
    assert {"t": "error", "code": "bad_path"}.items() <= frames[-1].items(), frames
    assert not any(f["t"] == "accept" for f in frames), frames


def test_a_sender_whose_bytes_do_not_match_its_digest_fails_hash_mismatch(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer
) -> None:
    """good.bin arrives as announced and stays; bad.bin's bytes do not match the
    sender's file_end digest: it is not kept, the session ends hash_mismatch (exit 4),
    and the files that were already there are untouched."""
    from tests import rogue_peer

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"already here")
    ours, rogue, _ = start_against_rogue(tmp_path, launcher, signal_server, "sender", "corrupt")
    finished = ours.wait(SESSION_DEADLINE)

    assert finished.returncode == EXIT_HASH_MISMATCH, logs(finished)
    assert finished.summary is not None
    assert (finished.summary["outcome"], finished.summary["error_code"]) == ("failed", "hash_mismatch"), finished.summary
    assert "bad.bin" in finished.summary["message"], finished.summary["message"]
    assert sorted(os.listdir(out)) == ["good.bin", "keep.txt"], os.listdir(out)  # no partial file either
    assert (out / "good.bin").read_bytes() == rogue_peer.GOOD
    assert (out / "keep.txt").read_bytes() == b"already here"
    # B.6: file_result mismatch (with the digest of what actually arrived, not of
    # what was claimed), then error hash_mismatch ends the session; no done_ack.
    frames = frames_received(rogue)
    results = {f["id"]: f for f in frames if f["t"] == "file_result"}
    assert results[1]["status"] == "mismatch", frames
    assert results[1]["sha256"] == hashlib.sha256(rogue_peer.BAD).hexdigest() != rogue_peer.CLAIMED
    assert results[0]["status"] == "verified", frames  # told before the error: it stays
    assert finished.summary["files_verified"] == 1, finished.summary
    assert {"t": "error", "code": "hash_mismatch"}.items() <= frames[-1].items(), frames
    assert "bad.bin" in str(frames[-1]["message"]) and not any(f["t"] == "done_ack" for f in frames)


def assert_wrong_digest_verdict(finished: Finished, rogue: Proc, out: Path, context: str = "") -> None:
    """What a wrong file_end digest must always give (B.6), whatever the timing."""
    from tests import rogue_peer

    frames = frames_received(rogue)
    got = (finished.returncode, finished.summary and finished.summary["error_code"])
    assert got == (EXIT_HASH_MISMATCH, "hash_mismatch"), f"{context}: {got}, frames {frames}\n{logs(finished)}"
    results = {f["id"]: f["status"] for f in frames if f["t"] == "file_result"}
    assert results == {0: "verified", 1: "mismatch"}, (context, frames)
    assert {"t": "error", "code": "hash_mismatch"}.items() <= frames[-1].items(), (context, frames)
    assert sorted(os.listdir(out)) == ["good.bin", "keep.txt"], (context, os.listdir(out))
    assert (out / "good.bin").read_bytes() == rogue_peer.GOOD


def test_a_slow_decision_is_not_taken_for_the_peers_silence(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer
) -> None:
    """Issue 12's race, made deterministic: the receiver takes longer than the
    progress watchdog (3 s here) to accept, as a user at the prompt or a loaded
    machine starting the workers does, and the sender then takes a second to send
    its first DATA.  The sender rightly said nothing meanwhile; the verdict is
    still the wrong digest's (exit 4), not a stall, a reconnect and a timeout (exit 1)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"already here")
    master, slave = os.openpty()
    try:
        ours, rogue, _ = start_against_rogue(
            tmp_path, launcher, signal_server, "sender", "corrupt", "--delay", "1", receiver_stdin=slave
        )
        os.close(slave)
        slave = -1
        ours.wait_for_output(r"Accept\? \[y/N\]", PROGRESS_DEADLINE, stream="stdout")
        time.sleep(HANDSHAKE_TIMEOUT + 1.5)
        os.write(master, b"y\n")
        finished = ours.wait(SESSION_DEADLINE)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert_wrong_digest_verdict(finished, rogue, out)


REPEATS_UNDER_LOAD = 6


@contextlib.contextmanager
def busy_loop() -> Iterator[None]:
    """A process spinning on one core beside the test, as on a loaded machine."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def test_a_wrong_digest_gets_the_same_verdict_every_time_under_load(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer
) -> None:
    """The verdict for a given input never depends on timing: the same wrong
    digest, run again and again with a core kept busy and the sender's first DATA
    at varying delays, ends exit 4 / hash_mismatch with the same frames each time."""
    rng = random.Random()
    with busy_loop():
        for attempt in range(REPEATS_UNDER_LOAD):
            run_dir = tmp_path / f"run{attempt}"
            run_dir.mkdir()
            out = run_dir / "out"
            out.mkdir()
            (out / "keep.txt").write_bytes(b"already here")
            delay = rng.choice([0.0, 0.05, 0.3, 1.0])
            ours, rogue, _ = start_against_rogue(run_dir, launcher, signal_server, "sender", "corrupt", "--delay", str(delay))
            finished = ours.wait(SESSION_DEADLINE)
            rogue.popen.kill()
            assert_wrong_digest_verdict(finished, rogue, out, f"run {attempt}, first DATA {delay} s after accept")


def test_a_receiver_slow_to_accept_still_completes(tmp_path: Path, launcher: Launcher) -> None:
    """The sender's side of the same clock: its frames go out only after the
    receiver's user answered, more than the progress watchdog (3 s) after the
    connection was made; that is no stall."""
    source = tmp_path / "src"
    write_random(source / "clip.mp4", 2 * MiB)
    config = tmp_path / "short.yaml"
    config.write_text(f"ice:\n  progress_timeout: {HANDSHAKE_TIMEOUT}\n")
    out = tmp_path / "out"
    master, slave = os.openpty()
    try:
        sender, receiver = start_pair(
            launcher,
            [source],
            out,
            sender_extra=("--config", str(config)),
            receiver_extra=("--config", str(config)),
            receiver_stdin=slave,
        )
        os.close(slave)
        slave = -1
        receiver.wait_for_output(r"Accept\? \[y/N\]", PROGRESS_DEADLINE, stream="stdout")
        time.sleep(HANDSHAKE_TIMEOUT + 1.5)
        os.write(master, b"y\n")
        received = receiver.wait(SESSION_DEADLINE)
        sent = sender.wait(SESSION_DEADLINE)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert (sent.returncode, received.returncode) == (0, 0), logs(sent, received)
    assert "reconnecting" not in sent.stderr + received.stderr, logs(sent, received)
    assert (out / "src" / "clip.mp4").read_bytes() == (source / "clip.mp4").read_bytes()


# -- not enough space ------------------------------------------------------------------------------


def test_an_offer_that_does_not_fit_is_refused_before_anything_is_written(
    tmp_path: Path, launcher: Launcher
) -> None:
    write_random(tmp_path / "src" / "big.bin", 8 * MiB)
    with small_tmpfs(tmp_path / "small", "2m") as out:
        sender, receiver = start_pair(launcher, [tmp_path / "src"], out)
        sent, received = finish(sender, receiver)
        written = snapshot(out)

    assert (received.returncode, sent.returncode) == (EXIT_FAILED, EXIT_FAILED), logs(sent, received)
    assert "not enough space" in received.stderr, received.stderr
    assert sent.summary is not None and received.summary is not None
    assert sent.summary["error_code"] == "no_space", sent.summary
    assert received.summary["error_code"] == "no_space", received.summary
    assert sent.summary["bytes_transferred"] == 0
    assert written == {}
