"""Hosts with nothing but loopback, and hosts with no usable address (issue 12).

Real CLIs in real network namespaces (root only; skipped otherwise):

* a namespace whose only interface is ``lo`` (a container, an offline machine):
  sender and receiver on that host complete over 127.0.0.1
  (``pipeline/connection/host_addresses.py``);
* a namespace whose only address is an IPv6 link-local one (``lo`` down), which
  ICE never uses: the signaling server still reaches it over that address, but
  it gathers no candidate at all; that side says "this machine has no usable
  network address" and its peer says the other computer has none, instead of
  both blaming "different networks".

Every namespace and veth is deleted afterwards, including any a crashed earlier
run left behind (``pxfer-t-`` / ``pxl`` prefixes).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.mediagen import generate_media_tree, tree_digest
from tests.cli_harness import Launcher, free_port, new_code, receiver_args, sender_args

NS_PREFIX = "pxfer-t-"
VETH_PREFIX = "pxl"
EXIT_NO_ROUTE = 3
CONNECT_TIMEOUT = 6.0
DEADLINE = 90.0
MiB = 1024 * 1024


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _remove_stale() -> None:
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NS_PREFIX):
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(VETH_PREFIX) and len(name) == len(VETH_PREFIX) + 6:
            _ip("link", "del", name, check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (``lo`` down, as created); deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    _remove_stale()
    name = NS_PREFIX + secrets.token_hex(4)
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        yield name
    finally:
        _ip("netns", "del", name, check=False)
        assert name not in _ip("netns", "list", check=False).stdout


@pytest.fixture
def launcher_in(tmp_path: Path, netns: str) -> Iterator[Launcher]:
    logs = tmp_path / "logs"
    logs.mkdir()
    with Launcher(logs, prefix=("ip", "netns", "exec", netns)) as launcher:
        yield launcher


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "short.yaml"
    config.write_text(f"ice:\n  connect_timeout: {CONNECT_TIMEOUT:g}\n")
    return config


def test_two_processes_on_a_host_with_only_loopback_transfer(tmp_path: Path, netns: str, launcher_in: Launcher) -> None:
    _ip("netns", "exec", netns, "ip", "link", "set", "lo", "up")
    listed = _ip("netns", "exec", netns, "ip", "-o", "addr").stdout
    assert all(line.split()[1] == "lo" for line in listed.splitlines()), listed  # nothing but lo
    source = tmp_path / "src" / "media"
    generate_media_tree(source, seed=12, small_files=4, large_files=1, large_size=4 * MiB)
    out = tmp_path / "out"
    code = new_code()

    sender = launcher_in.start("sender", "pipeline.cli.send", sender_args([source], code, "--signal-port", str(free_port())))
    url = sender.wait_for_output(r"--signal (ws://\S+)", 30, stream="stdout").group(1)
    assert url.startswith("ws://127.0.0.1:"), url  # the only address there is
    receiver = launcher_in.start("receiver", "pipeline.cli.receive", receiver_args(code, url, out, "--yes"))
    received = receiver.wait(DEADLINE)
    sent = sender.wait(30)

    assert (sent.returncode, received.returncode) == (0, 0), f"{sender.text()}\n{receiver.text()}"
    assert tree_digest(out / "media") == tree_digest(source)
    assert received.summary is not None
    pair = received.summary["connection"]["selected_pair"]
    assert pair["local"]["address"] == pair["remote"]["address"] == "127.0.0.1", pair


@contextlib.contextmanager
def link_local_only(netns: str) -> Iterator[tuple[str, str]]:
    """A veth from the root namespace into ``netns`` with only IPv6 link-local
    addresses (fe80::1 here, fe80::2 there; ``lo`` stays down in ``netns``).
    Yields (root-side interface, namespace-side interface)."""
    here = VETH_PREFIX + secrets.token_hex(3)
    there = VETH_PREFIX + secrets.token_hex(3)
    _ip("link", "add", here, "type", "veth", "peer", "name", there)
    try:
        _ip("link", "set", there, "netns", netns)
        for ns, dev, addr in ((None, here, "fe80::1/64"), (netns, there, "fe80::2/64")):
            prefix = ("netns", "exec", ns, "ip") if ns else ()
            _ip(*prefix, "link", "set", dev, "addrgenmode", "none")
            _ip(*prefix, "-6", "addr", "add", addr, "dev", dev, "nodad")
            _ip(*prefix, "link", "set", dev, "up")
        yield here, there
    finally:
        _ip("link", "del", here, check=False)


def test_a_side_with_no_usable_address_says_so_and_its_peer_too(
    tmp_path: Path, netns: str, launcher_in: Launcher
) -> None:
    config = _config(tmp_path)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(100_000))
    out = tmp_path / "out"
    code = new_code()
    port = free_port()
    with link_local_only(netns) as (_here, there), Launcher(tmp_path / "logs") as root:
        assert "inet " not in _ip("netns", "exec", netns, "ip", "-o", "addr").stdout  # no IPv4 at all
        server = root.start("signal", "pipeline.cli.signal_server", ["--host", "::", "--port", str(port)], json_out=False)
        server.wait_for_output(r"signaling server listening on", 20, stream="stdout")
        ice = ("--config", str(config))
        sender = root.start("sender", "pipeline.cli.send", sender_args([source], code, "--signal", f"ws://[::1]:{port}/ws", *ice))
        sender.wait_for_output(r"joined the room", 30)
        url = f"ws://[fe80::1%{there}]:{port}/ws"  # the signaling server over link-local
        receiver = launcher_in.start("receiver", "pipeline.cli.receive", receiver_args(code, url, out, "--yes", *ice))
        received = receiver.wait(DEADLINE)
        sent = sender.wait(30)

    logs = f"{sender.text()}\n{receiver.text()}"
    assert (sent.returncode, received.returncode) == (EXIT_NO_ROUTE, EXIT_NO_ROUTE), logs
    assert received.summary is not None and sent.summary is not None, logs
    ours, theirs = received.summary["connection"], sent.summary["connection"]
    assert ours["observation"]["local_types"] == [], ours["observation"]
    assert ours["no_route"]["cause"] == "no_local_address", ours["no_route"]
    assert "This machine has no usable network address" in received.stderr, received.stderr
    assert "different networks" not in received.stderr, received.stderr
    assert theirs["no_route"]["cause"] == "peer_no_address", theirs["no_route"]
    assert "The other computer has no usable network address" in sent.stderr, sent.stderr
    assert not out.exists() or os.listdir(out) == []
