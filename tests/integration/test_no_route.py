"""No direct path: both CLIs end ``no_route`` and say why (Appendix A.1, A.4).

One machine, a real network (``tests/netlab.py``): each peer in its own network
namespace behind its own router, a real STUN server (coturn, STUN only) and a
standalone ``pipeline-signal`` on the lab's public segment where both peers reach
it.  ``pipeline-send`` runs in ``peer-a``, ``pipeline-receive`` in ``peer-b``.
Signaling works, so the peers meet, exchange offer and answer, and then find
that no UDP path exists between them:

* both behind symmetric NATs (each picks a new public port per destination and
  drops what it did not ask for);
* the sender's network blocking UDP altogether.

What the user must see: both programs end by themselves with exit code 3, the
message says in plain words what was seen and what to do (a VPN, a port
forward, the same network), the JSON summary carries the candidate types each
side gathered, and ``--out`` is left as it was (here: not even created).

Deadlines: ``--connect-timeout 6`` after the offer, plus candidate gathering
(aioice's STUN transactions take ~3.5 s+ when nothing answers) and process
start-up inside the lab.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.cli_harness import Finished, Proc, new_code, receiver_args, sender_args
from tests.netlab import NetLab, require_netlab

pytestmark = [pytest.mark.slow, pytest.mark.netlab, pytest.mark.timeout(150)]

EXIT_NO_ROUTE = 3
CONNECT_TIMEOUT = "6"
NO_ROUTE_DEADLINE = 30.0  # s from the receiver's start to both exits
JOIN_DEADLINE = 30.0


class LabCLIs:
    """Starts CLI processes inside the lab's namespaces, logging into ``log_dir``."""

    def __init__(self, lab: NetLab, log_dir: Path) -> None:
        self.lab = lab
        self.log_dir = log_dir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, ns: str, module: str, args: Sequence[str], *, json_out: bool = True) -> Proc:
        json_path = self.log_dir / f"{name}.json" if json_out else None
        argv = [sys.executable, "-m", module, *args]
        if json_path is not None:
            argv += ["--json", str(json_path)]
        with open(self.log_dir / f"{name}.out", "w") as out, open(self.log_dir / f"{name}.err", "w") as err:
            popen = self.lab.run(ns, argv, stdout=out, stderr=err, text=True, env=self.env, cwd=self.log_dir)
        return Proc(name, popen, self.log_dir, json_path)


def run_until_no_route(lab: NetLab, tmp_path: Path) -> tuple[Finished, Finished, Path]:
    logs = tmp_path / "logs"
    logs.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "holiday.mp4").write_bytes(os.urandom(256 * 1024))
    out = tmp_path / "out"
    clis = LabCLIs(lab, logs)

    host, port = lab.signaling_address
    server = clis.start(
        "signal", "stun", "pipeline.cli.signal_server", ["--host", host, "--port", str(port)], json_out=False
    )
    lab.wait_listening(server.popen, port)
    url = f"ws://{host}:{port}/ws"
    ice = ["--stun", lab.stun_url, "--connect-timeout", CONNECT_TIMEOUT]
    code = new_code()

    sender = clis.start("sender", "peer-a", "pipeline.cli.send", sender_args([src / "holiday.mp4"], code, "--signal", url, *ice))
    sender.wait_for_output(r"joined the room", JOIN_DEADLINE)
    started = time.monotonic()
    receiver = clis.start("receiver", "peer-b", "pipeline.cli.receive", receiver_args(code, url, out, "--yes", *ice))
    received = receiver.wait(NO_ROUTE_DEADLINE)
    sent = sender.wait(max(1.0, NO_ROUTE_DEADLINE - (time.monotonic() - started)))
    return sent, received, out


def assert_no_route(finished: Finished, role: str) -> dict[str, object]:
    """Exit 3, a plain-words explanation with advice, and the diagnostics in JSON."""
    text = f"--- {role} exit {finished.returncode}\n{finished.stdout}\n{finished.stderr}"
    assert finished.returncode == EXIT_NO_ROUTE, text
    assert "No direct connection could be made." in finished.stderr, text
    assert "What we saw:" in finished.stderr and "Most likely:" in finished.stderr, text
    assert "What you can do:" in finished.stderr, text
    assert "VPN" in finished.stderr, text
    summary = finished.summary
    assert summary is not None, text
    assert summary["outcome"] == "no_route" and summary["exit_code"] == EXIT_NO_ROUTE, summary
    connection = summary["connection"]
    observation = connection["observation"]
    assert "host" in observation["local_types"], observation
    assert "relay" not in observation["local_types"] + observation["remote_types"]  # never TURN
    assert connection["no_route"]["advice"], connection
    diagnosis: dict[str, object] = connection["no_route"]
    return {"observation": observation, **diagnosis}


@pytest.fixture
def lab_prerequisites() -> None:
    require_netlab()


@pytest.mark.usefixtures("lab_prerequisites")
def test_both_behind_symmetric_nats(tmp_path: Path) -> None:
    with NetLab(prefix=f"nr{os.getpid() % 100000}", nat_a="symmetric", nat_b="symmetric") as lab:
        sent, received, out = run_until_no_route(lab, tmp_path)

    for finished, role in ((sent, "sender"), (received, "receiver")):
        found = assert_no_route(finished, role)
        observation = found["observation"]
        assert isinstance(observation, dict)
        # Each side's STUN server answered through its NAT; the paths still failed.
        assert "srflx" in observation["local_types"], found
        assert "srflx" in observation["remote_types"], found
        assert observation["stun_answered"] is True, found
        assert "symmetric" in finished.stderr.lower(), finished.stderr
        assert "forward a udp port" in finished.stderr.lower(), finished.stderr
    assert not out.exists(), sorted(out.rglob("*"))


@pytest.mark.usefixtures("lab_prerequisites")
def test_the_senders_network_blocks_udp(tmp_path: Path) -> None:
    with NetLab(prefix=f"nu{os.getpid() % 100000}", nat_a="udp_blocked", nat_b="cone") as lab:
        sent, received, out = run_until_no_route(lab, tmp_path)

    blocked = assert_no_route(sent, "sender")
    other = assert_no_route(received, "receiver")
    blocked_seen = blocked["observation"]
    other_seen = other["observation"]
    assert isinstance(blocked_seen, dict) and isinstance(other_seen, dict)
    # The blocked side learned no public address; the other side did.
    assert blocked_seen["local_types"] == ["host"], blocked
    assert "srflx" in other_seen["local_types"], other
    assert blocked["cause"] == "udp_blocked", blocked
    assert "blocks UDP" in sent.stderr, sent.stderr
    assert "UDP" in received.stderr, received.stderr
    assert not out.exists(), sorted(out.rglob("*"))
