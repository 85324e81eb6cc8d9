"""aiortc through real NATs, a real STUN server and impaired links (tests/netlab.py).

Each test builds its own lab and two ``tests/netlab_peer.py`` processes that
exchange SDP through files.  Connecting cases must carry a ping/pong over the
DataChannel; failing cases must fail by themselves (``aioice.stun.RETRY_MAX =
2``: 3.5 s per check) and report the diagnostics inputs, which must differ
between a symmetric NAT and a network that blocks UDP.  Every test also
checks that its lab left nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netlab import NetLab, require_netlab

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "tests" / "netlab_peer.py"


@pytest.fixture
def lab_prerequisites() -> None:
    require_netlab()


needs_lab = pytest.mark.usefixtures("lab_prerequisites")


def _prefix(name: str) -> str:
    return f"{name}{os.getpid() % 100000}"


def run_peers(lab: NetLab, exchange: Path, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Offerer in peer-a, answerer in peer-b; returns their JSON reports."""
    probe = [f"--probe-nat={host}:{port}" for host, port in lab.stun_servers]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {}
    for side, role in (("a", "offer"), ("b", "answer")):
        argv = [sys.executable, str(PEER), "--role", role, "--exchange", str(exchange)]
        argv += ["--stun", lab.stun_url, *probe, *extra]
        procs[side] = lab.run(
            f"peer-{side}",
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
    reports = {}
    for side, proc in procs.items():
        out, err = proc.communicate(timeout=40)
        lines = out.strip().splitlines()
        assert lines, f"peer {side} printed nothing; stderr:\n{err[-3000:]}"
        reports[side] = json.loads(lines[-1])
        assert reports[side]["state"] != "crashed", f"peer {side}: {reports[side]}\n{err[-3000:]}"
    return reports["a"], reports["b"]


def summary(report: dict[str, Any]) -> str:
    keys = (
        "role", "state", "local_types", "remote_types", "stun_answered", "checks_from_peer",
        "our_checks_answered", "incoming_check_sources", "selected_pair", "nat_mapping",
        "gathered_s", "connected_s", "elapsed_s",
    )  # fmt: skip
    brief = {k: report.get(k) for k in keys}
    if "diagnosis" in report:
        brief["cause"] = report["diagnosis"]["cause"]
    return json.dumps(brief)


def assert_clean(lab: NetLab) -> None:
    """Nothing of the lab survives its context manager."""
    assert lab.leftovers() == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert (
        not {lab.ns(role) for role in ("peer-a", "nat-a", "peer-b", "nat-b", "wan", "stun")} & names
    )
    assert lab.turnserver is not None and lab.turnserver.poll() is not None
    # No coturn of this lab anywhere (its command line names the lab's work directory).
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert not (b"turnserver" in cmdline and str(lab.workdir).encode() in cmdline), pid


@needs_lab
@pytest.mark.parametrize(("nat_a", "nat_b"), [("cone", "cone"), ("full_cone", "symmetric")])
def test_peers_connect_through_nats(nat_a: str, nat_b: str, tmp_path: Path) -> None:
    with NetLab(_prefix("c"), nat_a=nat_a, nat_b=nat_b) as lab:
        a, b = run_peers(lab, tmp_path)
    print(f"\n{nat_a}<->{nat_b} lab {lab.timings}\n  a: {summary(a)}\n  b: {summary(b)}")
    assert_clean(lab)

    for report in (a, b):
        assert report["state"] == "connected", summary(report)
        assert report["echo"] is True, "the DataChannel did not carry data both ways"
        assert report["local_types"] == ["host", "srflx"]
        assert "srflx" in report["remote_sdp_types"]
        assert report["stun_answered"] is True
        assert report["checks_from_peer"] is True
        assert report["our_checks_answered"] is True
        assert report["buffers_set"] >= 1
        pair = report["selected_pair"]
        if pair is None and report["role"] == "answer":
            # aioice's controlled agent can open the channel and be closed by the
            # offerer before it records the nomination; the controlling side must have it.
            continue
        assert pair is not None
        # The local side of a pair is the socket's base: the host candidate.
        assert pair["local"]["type"] == "host"
        assert pair["local"]["address"].startswith("10.0.")
        # The peer is only reachable through its NAT's public address.
        assert pair["remote"]["address"] in {lab.addresses["nat-a"], lab.addresses["nat-b"]}
        assert pair["remote"]["type"] in {"srflx", "prflx"}
        assert pair["rtt_ms"] is not None and pair["rtt_ms"] > 0

    assert a["nat_mapping"]["symmetric"] is False
    assert b["nat_mapping"]["symmetric"] is (nat_b == "symmetric")
    if nat_b == "symmetric":
        # The symmetric side's checks came from a port it never signalled, and
        # the full cone let them in: the offerer learned it as peer-reflexive.
        assert "prflx" in a["remote_types"]
        assert a["selected_pair"]["remote"]["type"] == "prflx"


@needs_lab
@pytest.mark.parametrize(("nat_a", "nat_b"), [("symmetric", "symmetric"), ("udp_blocked", "cone")])
def test_no_route_is_diagnosed(nat_a: str, nat_b: str, tmp_path: Path) -> None:
    with NetLab(_prefix("f"), nat_a=nat_a, nat_b=nat_b) as lab:
        a, b = run_peers(lab, tmp_path, "--retry-max", "2", "--deadline", "8")
    print(f"\n{nat_a}<->{nat_b} lab {lab.timings}\n  a: {summary(a)}\n  b: {summary(b)}")
    assert_clean(lab)

    for report in (a, b):
        # ICE gave up by itself, before the peer's own deadline.
        assert report["state"] == "failed", summary(report)
        assert report["selected_pair"] is None
        assert report["checks_from_peer"] is False
        assert report["our_checks_answered"] is False
        assert report["incoming_check_sources"] == []
        assert all(p["state"] == "failed" for p in report["pair_states"]), report["pair_states"]

    if nat_a == "symmetric":
        for report in (a, b):
            assert report["local_types"] == ["host", "srflx"]
            assert report["remote_types"] == ["host", "srflx"]
            assert report["stun_answered"] is True
            assert report["nat_mapping"]["symmetric"] is True
            assert report["diagnosis"]["cause"] == "symmetric_nat_here"
    else:
        # The blocked side never heard from STUN; the other side did, and saw
        # only the blocked side's private address.
        assert a["local_types"] == ["host"]
        assert a["stun_answered"] is False
        assert a["nat_mapping"]["symmetric"] is None
        assert a["remote_types"] == ["host", "srflx"]
        assert a["diagnosis"]["cause"] == "udp_blocked"
        assert b["local_types"] == ["host", "srflx"]
        assert b["remote_types"] == ["host"]
        assert b["observation"]["remote_addresses_private_only"] is True
        assert b["diagnosis"]["cause"] == "peer_no_public_address"


ECHO_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"""

PINGER = """
import json, socket, sys, time
count, gap, wait = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[4], 9999))
s.settimeout(0.005)
sent, rtts = {}, []
start = time.monotonic()
while time.monotonic() < start + count * gap + wait:
    if len(sent) < count and time.monotonic() >= start + len(sent) * gap:
        sent[len(sent)] = time.monotonic()
        s.send(str(len(sent) - 1).encode())
    try:
        rtts.append(time.monotonic() - sent[int(s.recv(64))])
    except socket.timeout:
        pass
rtts.sort()
print(json.dumps({"got": len(rtts), "median_ms": rtts[len(rtts) // 2] * 1000 if rtts else None}))
"""


@needs_lab
def test_impairments(tmp_path: Path) -> None:
    """loss, cut/restore, delay, rate and conntrack flush change what a UDP echo sees."""
    with NetLab(_prefix("i")) as lab:
        echo = lab.run("stun", [sys.executable, "-c", ECHO_SERVER])
        lab.wait_listening(echo, 9999, proto="udp")

        def ping(count: int = 40, wait: float = 0.4) -> dict[str, Any]:
            result = lab.execute(
                "peer-a",
                [
                    sys.executable,
                    "-c",
                    PINGER,
                    str(count),
                    "0.005",
                    str(wait),
                    lab.addresses["stun"],
                ],
            )
            return dict(json.loads(result.stdout))

        assert ping()["got"] == 40
        assert lab.conntrack_count("a") >= 1
        lab.flush_conntrack("a")
        assert lab.conntrack_count("a") == 0

        lab.loss("a", 0.5)  # both directions cross nat-a: about a quarter survives
        assert 0 < ping(200)["got"] < 120
        lab.loss("a", 0)
        assert ping()["got"] == 40

        lab.cut("a")
        assert ping()["got"] == 0
        lab.restore("a")
        assert ping()["got"] == 40

        lab.delay("a", 40)  # each way through nat-a
        delayed = ping(wait=1.0)
        assert delayed["got"] == 40
        assert delayed["median_ms"] >= 75
        lab.delay("a", 0)
        assert ping()["median_ms"] < 40

        lab.rate("a", "8mbit")
        shown = lab.execute("nat-a", ["tc", "qdisc", "show", "dev", "wan0"]).stdout
        assert "tbf" in shown and "8Mbit" in shown
        lab.rate("a", None)
        assert "tbf" not in lab.execute("nat-a", ["tc", "qdisc", "show", "dev", "wan0"]).stdout
    print(f"\nlab {lab.timings}")
    assert_clean(lab)


@needs_lab
def test_lab_teardown_after_a_failure() -> None:
    """An exception inside the lab still tears everything down."""
    lab = NetLab(_prefix("x"), nat_a="symmetric", nat_b="udp_blocked")
    with pytest.raises(RuntimeError, match="boom"), lab:
        sleeper = lab.run("peer-b", ["sleep", "60"])
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert_clean(lab)


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_prerequisites_skip_or_fail_under_ci(
    ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without root or tools the lab tests skip, except under CI=true: they fail."""
    import tests.netlab

    monkeypatch.setattr(tests.netlab, "netlab_available", lambda: (False, "netlab needs root"))
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="netlab needs root"):
        require_netlab()
