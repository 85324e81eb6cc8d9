"""An unattended batch (issue 13): ``pipeline-send --config batch.yaml`` with the
sources in the config, a receiver with ``receive.yes``/``receive.out`` from its own
config, and some source files the sender really cannot read.

Root can read anything, so the sender runs as root without the capabilities that
let root ignore file modes (``setpriv`` drops CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH from its bounding set), and the unreadable files are mode 000
files and one mode 000 directory: what a user's batch meets.  Everything else must arrive verified; the sender must list each
unreadable file and exit 1 (``failed``/``io_error``), the receiver ``completed``.

5,000 files of 64 bytes: the point is the file count, not the bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.cli_harness import Launcher, free_port, new_code

pytestmark = pytest.mark.slow

NO_DAC = "-dac_override,-dac_read_search"
FILES = 5000
UNREADABLE_EVERY = 500  # 10 files
TIMEOUT = 240.0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_batch_of_5000_files_with_unreadable_ones_sends_all_the_others(tmp_path: Path) -> None:
    world = tmp_path
    src = world / "media"
    expected: dict[str, str] = {}
    unreadable: set[str] = set()
    for i in range(FILES):
        rel = f"media/d{i % 7}/e{i % 13}/f{i:05d}.jpg"
        path = world / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(i.to_bytes(4, "big") * 16)
        if i % UNREADABLE_EVERY == 0:
            path.chmod(0o000)
            unreadable.add(str(path))
        else:
            path.chmod(0o644)
            expected[rel] = _digest(path)
    locked = src / "locked"
    locked.mkdir()
    (locked / "never-seen.jpg").write_bytes(b"x")
    locked.chmod(0o000)
    unreadable.add(str(locked))
    for directory in [src, *src.rglob("*")]:
        if directory.is_dir() and directory != locked:
            directory.chmod(0o755)

    logs = world / "sender-logs"
    logs.mkdir()
    (world / "send.yaml").write_text(f"send:\n  sources: [{src}]\noutput:\n  progress: lines\n")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "receive.yaml").write_text(f"receive:\n  yes: true\n  out: {out}\n")
    code = new_code()
    no_dac = ("setpriv", f"--bounding-set={NO_DAC}", f"--inh-caps={NO_DAC}")
    with Launcher(logs, prefix=no_dac) as senders, Launcher(tmp_path) as receivers:
        sender = senders.start(
            "sender",
            "pipeline.cli.send",
            ["--config", str(world / "send.yaml"), "--code", code, "--signal-port", str(free_port())],
        )
        sender.wait_for_output(r"joined the room", 30)
        url = sender.wait_for_output(r"--signal (ws://\S+)", 5, stream="stdout").group(1)
        receiver = receivers.start(
            "receiver",
            "pipeline.cli.receive",
            [code, "--signal", url, "--config", str(tmp_path / "receive.yaml"), "--progress", "none"],
        )
        r = receiver.wait(TIMEOUT)
        s = sender.wait(TIMEOUT)

    assert r.returncode == 0, r.stderr
    assert r.summary is not None and r.summary["outcome"] == "completed"
    assert r.summary["files_verified"] == len(expected)

    assert s.returncode == 1, s.stderr
    assert s.summary is not None
    assert (s.summary["outcome"], s.summary["error_code"]) == ("failed", "io_error")
    assert s.summary["files_verified"] == len(expected)
    assert {item["path"] for item in s.summary["unreadable"]} == unreadable
    assert all(item["reason"] == "Permission denied" for item in s.summary["unreadable"])
    for path in unreadable:
        assert f"not sent, cannot read: {path}: Permission denied" in s.stderr + s.stdout
    assert f"{len(unreadable)} files could not be read" in s.stderr
    # The final report: every file with its outcome in the JSON, the others named at the end.
    sent = {f["path"]: f["outcome"] for f in s.summary["file_outcomes"]}
    assert sent == {**dict.fromkeys(expected, "verified"), **dict.fromkeys(unreadable, "unreadable")}
    got = {f["path"]: f["outcome"] for f in r.summary["file_outcomes"]}
    assert got == dict.fromkeys(expected, "verified")
    total = len(expected) + len(unreadable)
    assert f"{len(unreadable)} of {total} files not verified: {len(unreadable)} unreadable" in s.stderr
    # Progress names the file in progress beside the count.
    assert re.search(r"files \d+/\d+, now \S", s.stderr), s.stderr[-2000:]

    received = {str(p.relative_to(out)): _digest(p) for p in out.rglob("*") if p.is_file()}
    assert received == expected
    locked.chmod(0o755)  # so the cleanup can remove it
