"""Whole transfers with the real CLIs, each side its own process tree (issue 3).

``pipeline-send`` and ``pipeline-receive`` run as separate processes
(``tests/cli_harness.py``) on 127.0.0.1, through a standalone ``pipeline-signal``
or the sender's embedded signaling server.  What a user would notice is what is
checked: the received tree is byte-for-byte and name-for-name the sent one
(``tree_digest``: sizes, SHA-256, exact Unicode names, empty files), both
programs exit 0 and their JSON summaries say ``completed`` with the right file
count, and the signaling server relayed a few KB whatever the payload
(Appendix C: it never carries file bytes).

Sizes: the pipeline moves ~10 MB/s on a 2-core machine, so the one 64 MiB file
takes seconds; everything else is a few MiB.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.connection.sctp_flight import cap_for_rtt
from pipeline.mediagen import generate_media_tree, tree_digest
from pipeline.signaling.codes import is_valid_code
from pipeline.signaling.webapp import page_link
from pipeline.units import format_rate
from tests.cli_harness import Finished, Launcher, Proc, free_port, receiver_args, start_pair

if TYPE_CHECKING:
    from tests.integration.conftest import SignalServer

pytestmark = pytest.mark.slow

KiB = 1024
MiB = 1024 * KiB
# Appendix C caps one signaling message at 64 KiB; a whole session (offer,
# answer, a handful of candidates) stays far below even that.
RELAY_LIMIT = 64 * KiB
TRANSFER_DEADLINE = 150.0  # s for the 64 MiB tree on a busy 2-core machine
SMALL_DEADLINE = 60.0
OFFER_DEADLINE = 30.0  # s from the receiver's start to the offer on its screen
SENDER_AFTER_RECEIVER = 30.0  # s the sender may take to exit once the receiver has


def finish(sender: Proc, receiver: Proc, deadline: float) -> tuple[Finished, Finished]:
    received = receiver.wait(deadline)
    sent = sender.wait(SENDER_AFTER_RECEIVER)
    return sent, received


def assert_completed(sent: Finished, received: Finished, files: int, total_bytes: int) -> None:
    logs = f"--- sender\n{sent.stdout}\n{sent.stderr}\n--- receiver\n{received.stdout}\n{received.stderr}"
    assert (sent.returncode, received.returncode) == (0, 0), logs
    for finished, role in ((sent, "sender"), (received, "receiver")):
        summary = finished.summary
        assert summary is not None, f"{role} wrote no JSON summary\n{logs}"
        assert summary["role"] == role
        assert summary["outcome"] == "completed", logs
        assert summary["exit_code"] == 0
        assert summary["files"] == files, summary
        assert summary["files_verified"] == files, summary
        assert summary["bytes"] == total_bytes, summary
    assert f"completed: {files} files" in received.stdout, logs
    assert f"completed: {files} files" in sent.stdout, logs


# The processes of each side's tree, as the summary's memory figures name them.
ROLES = {"sender": {"supervisor", "connection", "reader", "hasher"}, "receiver": {"supervisor", "connection", "writer", "hasher"}}


def assert_summary_schema(summary: dict[str, Any], role: str, files: int, total_bytes: int) -> None:
    """The ``--json`` summary of a completed session holds every figure the README
    promises, each plausible: this is what a script reading it relies on."""
    assert summary["role"] == role
    assert (summary["outcome"], summary["exit_code"], summary["error_code"]) == ("completed", 0, None), summary
    assert (summary["files"], summary["files_verified"]) == (files, files), summary
    assert summary["bytes"] == summary["bytes_transferred"] == total_bytes, summary
    if role == "receiver":
        assert summary["offered_bytes"] == total_bytes, summary
    # The rate is over the transfer alone, which is part of the session.
    duration, transfer = summary["duration_s"], summary["transfer_s"]
    assert 0 < transfer <= duration, (transfer, duration)
    assert summary["throughput_bytes_per_s"] == pytest.approx(total_bytes / transfer, rel=0.01), summary
    assert summary["throughput_bytes_per_s"] > 0
    assert isinstance(summary["stalls"], list) and summary["stall_count"] == len(summary["stalls"]), summary
    for counter in ("retransmitted_frames", "duplicate_frames"):
        assert isinstance(summary[counter], int) and summary[counter] >= 0, summary
    memory = summary["memory"]
    assert set(memory["processes"]) == ROLES[role], memory
    assert all(p["peak_pss"] > 0 for p in memory["processes"].values()), memory
    assert memory["peak_sum_pss"] > 0, memory
    connection = summary["connection"]
    pair = connection["selected_pair"]
    assert pair["local"]["address"] and pair["remote"]["address"], pair
    assert isinstance(pair["rtt_ms"], int | float) and pair["rtt_ms"] >= 0, pair
    # The connection process ran on uvloop (a third faster, aiortc-facts.md), and by
    # default no ICE server is configured: host candidates only, no outside address.
    assert connection["event_loop"] == "uvloop", connection
    assert connection["ice_servers"] == [], connection


def assert_no_partials(out: Path) -> None:
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".part")]
    assert not leftovers, f"partial files left in {out}: {leftovers}"


def payload_bytes(digest: dict[str, tuple[int, str]]) -> int:
    return sum(size for size, _ in digest.values())


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_media_tree_through_a_standalone_signaling_server(
    tmp_path: Path, launcher: Launcher, signal_server: SignalServer
) -> None:
    source = tmp_path / "src" / "media"
    names = generate_media_tree(source, seed=3, small_files=300, large_files=1, large_size=64 * MiB)
    sent_tree = tree_digest(source)
    assert len(sent_tree) == len(names) == 301
    assert any(size == 0 for size, _ in sent_tree.values())  # empty files travel too
    assert any(not name.isascii() for name in sent_tree)  # and Unicode names
    total = payload_bytes(sent_tree)
    assert total > 64 * MiB
    out = tmp_path / "out"

    sender, receiver = start_pair(launcher, [source], out, url=signal_server.url)
    # The receiver shows what is offered before anything moves (C.4), count, size
    # and top-level names; a manifest this size (> 16 KiB) must get there too.
    receiver.wait_for_output(r"Offered: 301 files", OFFER_DEADLINE)
    sent, received = finish(sender, receiver, TRANSFER_DEADLINE)

    assert "\n  media/  (301 files)\n" in received.stderr, received.stderr
    assert_completed(sent, received, files=301, total_bytes=total)
    assert sent.summary is not None and received.summary is not None
    assert_summary_schema(sent.summary, "sender", files=301, total_bytes=total)
    assert_summary_schema(received.summary, "receiver", files=301, total_bytes=total)
    rate = re.search(r"completed: 301 files, .* in [\d:]+ \(([\d.]+ [kMG]?B/s); ", received.stdout)
    assert rate is not None, received.stdout
    assert rate.group(1) == format_rate(received.summary["throughput_bytes_per_s"])  # the transfer's rate
    assert os.listdir(out) == ["media"]
    assert tree_digest(out / "media") == sent_tree
    assert_no_partials(out)
    # The sender used the standalone server, not one of its own.
    assert sent.summary is not None and "signaling_relayed" not in sent.summary

    rooms = signal_server.stop()
    assert len(rooms) == 1, signal_server.proc.text()
    room = rooms[0]
    # Offer, answer and candidates went through it (so the count is real), and
    # that is all: a few KB for more than 64 MiB of files.
    assert room.messages >= 2 and room.bytes > 0, room
    assert room.bytes < RELAY_LIMIT, room
    assert room.bytes * 1000 < total, room


def test_thousands_of_small_files(tmp_path: Path, launcher: Launcher) -> None:
    """A phone's photo folder: the manifest alone is hundreds of KB (sent in parts)."""
    source = tmp_path / "src" / "phone"
    generate_media_tree(source, seed=13, small_files=3000, small_size_range=(0, 2 * KiB), large_files=0)
    sent_tree = tree_digest(source)
    out = tmp_path / "out"

    sender, receiver = start_pair(launcher, [source], out)
    receiver.wait_for_output(r"Offered: 3000 files", OFFER_DEADLINE)
    sent, received = finish(sender, receiver, SMALL_DEADLINE)

    assert_completed(sent, received, files=3000, total_bytes=payload_bytes(sent_tree))
    assert tree_digest(out / "phone") == sent_tree
    assert_no_partials(out)


def test_media_tree_through_the_senders_embedded_signaling(tmp_path: Path, launcher: Launcher) -> None:
    source = tmp_path / "src" / "camera"
    generate_media_tree(source, seed=5, small_files=60, large_files=1, large_size=4 * MiB)
    sent_tree = tree_digest(source)
    total = payload_bytes(sent_tree)
    out = tmp_path / "out"

    sender, receiver = start_pair(launcher, [source], out)  # no --signal: embedded server
    sent, received = finish(sender, receiver, SMALL_DEADLINE)

    assert_completed(sent, received, files=61, total_bytes=total)
    assert tree_digest(out / "camera") == sent_tree
    assert_no_partials(out)
    assert sent.summary is not None
    relayed: dict[str, Any] = sent.summary["signaling_relayed"]
    assert 0 < relayed["relayed_bytes"] < RELAY_LIMIT, relayed
    assert relayed["relayed_bytes"] * 100 < total, relayed
    assert relayed["relayed_messages"] >= 2, relayed


@pytest.mark.parametrize(
    ("channel", "negotiated"),
    [
        pytest.param("ordered: false", {"ordered": False}, id="unordered"),
        pytest.param("max_retransmits: 5", {"max_retransmits": 5}, id="max_retransmits"),
        pytest.param("max_packet_life_time: 2000", {"max_packet_life_time": 2000}, id="max_packet_life_time"),
        pytest.param("flight_cap: off", {}, id="flight_cap_off"),
        pytest.param("flight_cap: 1MiB", {}, id="flight_cap_fixed"),
    ],
)
def test_datachannel_options_from_a_config_file(
    tmp_path: Path, launcher: Launcher, channel: str, negotiated: dict[str, Any]
) -> None:
    source = tmp_path / "src" / "clips"
    generate_media_tree(source, seed=7, small_files=12, large_files=1, large_size=3 * MiB, unicode=False)
    sent_tree = tree_digest(source)
    config = write_config(tmp_path / "channel.yaml", f"channel:\n  {channel}\n")
    out = tmp_path / "out"

    sender, receiver = start_pair(
        launcher,
        [source],
        out,
        sender_extra=["--config", str(config)],
        receiver_extra=["--yes"],
    )
    sent, received = finish(sender, receiver, SMALL_DEADLINE)

    assert_completed(sent, received, files=13, total_bytes=payload_bytes(sent_tree))
    assert tree_digest(out / "clips") == sent_tree
    assert_no_partials(out)
    # Both sides ran with the options asked for: the receiver (no config given) learnt
    # them from the channel the sender opened (DCEP).
    expected = {"ordered": True, "max_retransmits": None, "max_packet_life_time": None, **negotiated}
    for summary in (sent.summary, received.summary):
        assert summary is not None
        options = summary["connection"]["channel"]
        assert {k: options[k] for k in expected} == expected, options
        assert (options["label"], options["protocol"]) == ("xfer", "xfer/1"), options
    # The sender's SCTP flight cap: from the path's RTT by default, or as configured.
    assert sent.summary is not None and received.summary is not None
    connection = sent.summary["connection"]
    rtt_ms = connection["selected_pair"]["rtt_ms"]
    expected_cap = {
        "flight_cap: off": None,
        "flight_cap: 1MiB": 1024 * 1024,
    }.get(channel, cap_for_rtt(None if rtt_ms is None else rtt_ms / 1000))
    assert connection["flight_cap"] == expected_cap, (channel, connection)
    assert "flight_cap" not in received.summary["connection"]  # the receiver sends no data


def test_a_directory_and_a_loose_file_in_one_session(tmp_path: Path, launcher: Launcher) -> None:
    src = tmp_path / "src"
    folder = src / "Été 2024"
    generate_media_tree(folder, seed=11, small_files=20, large_files=1, large_size=2 * MiB)
    loose = src / "notes – final.txt"
    loose.write_bytes(os.urandom(300 * KiB))
    out = tmp_path / "out"

    sender, receiver = start_pair(launcher, [folder, loose], out)
    sent, received = finish(sender, receiver, SMALL_DEADLINE)

    expected = tree_digest(src)
    assert_completed(sent, received, files=len(expected), total_bytes=payload_bytes(expected))
    assert sorted(os.listdir(out)) == sorted(["Été 2024", "notes – final.txt"])
    assert tree_digest(out) == expected


def test_a_single_empty_file(tmp_path: Path, launcher: Launcher) -> None:
    src = tmp_path / "src"
    src.mkdir()
    empty = src / "empty.dat"
    empty.touch()
    out = tmp_path / "out"

    sender, receiver = start_pair(launcher, [empty], out)
    sent, received = finish(sender, receiver, SMALL_DEADLINE)

    assert_completed(sent, received, files=1, total_bytes=0)
    assert os.listdir(out) == ["empty.dat"]
    assert (out / "empty.dat").stat().st_size == 0


# -- --quiet --------------------------------------------------------------------------------

ROOM_RETRIES = 10


def receive_when_the_room_is_open(launcher: Launcher, args: list[str]) -> Finished:
    """Run the receiver until it finds the sender's room: a quiet sender does not say
    when it has joined, and its code is printed before that."""
    for attempt in range(ROOM_RETRIES):
        finished = launcher.start(f"receiver{attempt}", "pipeline.cli.receive", args).wait(SMALL_DEADLINE)
        if "no sender is waiting under code" not in finished.stderr:
            return finished
        time.sleep(0.5)
    raise AssertionError(f"the sender's room never opened:\n{finished.stderr}")


def test_quiet_still_prints_the_random_code_and_the_command(tmp_path: Path, launcher: Launcher) -> None:
    """--quiet silences progress; the code (random here) and the command to run are
    the sender's result, and without them nobody could receive."""
    source = tmp_path / "src" / "docs"
    generate_media_tree(source, seed=17, small_files=5, large_files=1, large_size=1 * MiB, unicode=False)
    sent_tree = tree_digest(source)
    out = tmp_path / "out"

    sender = launcher.start("sender", "pipeline.cli.send", [str(source), "--quiet", "--signal-port", str(free_port())])
    command = sender.wait_for_output(r"\n  pipeline-receive (\S+) --signal (ws://\S+)\n", 30, stream="stdout")
    code, url = command.groups()
    assert is_valid_code(code), code
    assert re.search(rf"^Sending 6 files \(.*\) with code {re.escape(code)}$", sender.stdout(), re.M), sender.stdout()
    received = receive_when_the_room_is_open(launcher, receiver_args(code, url, out, "--yes", "--quiet"))
    sent = sender.wait(SENDER_AFTER_RECEIVER)

    assert (sent.returncode, received.returncode) == (0, 0), f"{sender.text()}\n{received.stderr}"
    assert tree_digest(out / "docs") == sent_tree
    # Nothing but the result: no progress, no status, no offer (--yes), no "completed".
    assert received.stdout == "" and received.stderr == "", received
    assert sent.stderr == "", sent.stderr
    # The embedded server serves the web app, so the browser link is part of the result.
    assert sent.stdout.splitlines()[1:] == [
        "On the receiving side run:",
        f"  pipeline-receive {code} --signal {url}",
        "or open in a browser:",
        f"  {page_link(url, code)}",
    ]
