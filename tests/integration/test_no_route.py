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

Deadlines: ``--connect-timeout 6`` counts from the descriptions' exchange (A.1:
the answer applied on the sender, sent on the receiver), which comes after the
receiver has started.  So each side exits no sooner than 6 s after the receiver's
start (it waited for its deadline) and within 6 s plus candidate gathering (5 s
on a side whose STUN server never answers, before the offer or the answer),
process start-up inside the lab and teardown.  Both bounds are loose: no speed
is measured.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_harness import Finished, Proc, new_code, receiver_args, sender_args
from tests.netlab import NetLab, require_netlab

pytestmark = [pytest.mark.slow, pytest.mark.netlab, pytest.mark.timeout(150)]

EXIT_NO_ROUTE = 3
CONNECT_TIMEOUT = 6.0
EARLY = 0.5  # s a timer may fire early; the deadline itself cannot start before the receiver
# s beyond the deadline for start-up, signaling, gathering (5 s when STUN is
# unreachable) and teardown: generous, as the lab's machines are shared.
GATHERING_AND_TEARDOWN = 15.0
NO_ROUTE_DEADLINE = 45.0  # s from the receiver's start to both exits, before giving up on them
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


@dataclass
class Ended:
    finished: Finished
    elapsed: float  # s from the receiver's start to this program's exit


def wait_both(sender: Proc, receiver: Proc, started: float, timeout: float) -> tuple[Ended, Ended]:
    """Wait for both programs, noting when each exited (from ``started``)."""
    exited: dict[str, float] = {}
    procs = {"sender": sender, "receiver": receiver}
    while len(exited) < len(procs) and time.monotonic() - started < timeout:
        for name, proc in procs.items():
            if name not in exited and proc.popen.poll() is not None:
                exited[name] = time.monotonic() - started
        time.sleep(0.05)
    ended = []
    for name, proc in procs.items():
        finished = proc.wait(max(1.0, timeout - (time.monotonic() - started)))
        ended.append(Ended(finished, exited.get(name, time.monotonic() - started)))
    return ended[0], ended[1]


def run_until_no_route(lab: NetLab, tmp_path: Path) -> tuple[Ended, Ended, Path]:
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
    ice = ["--stun", lab.stun_url, "--connect-timeout", f"{CONNECT_TIMEOUT:g}"]
    code = new_code()

    sender = clis.start("sender", "peer-a", "pipeline.cli.send", sender_args([src / "holiday.mp4"], code, "--signal", url, *ice))
    sender.wait_for_output(r"joined the room", JOIN_DEADLINE)
    started = time.monotonic()
    receiver = clis.start("receiver", "peer-b", "pipeline.cli.receive", receiver_args(code, url, out, "--yes", *ice))
    sent, received = wait_both(sender, receiver, started, NO_ROUTE_DEADLINE)
    return sent, received, out


def assert_no_route(ended: Ended, role: str) -> dict[str, object]:
    """Exit 3 once the connect deadline has passed (not before, not long after),
    a plain-words explanation with advice, and the diagnostics in JSON."""
    finished = ended.finished
    text = f"--- {role} exit {finished.returncode} after {ended.elapsed:.1f} s\n{finished.stdout}\n{finished.stderr}"
    assert finished.returncode == EXIT_NO_ROUTE, text
    # It waited for its deadline, which starts after the receiver did...
    assert ended.elapsed >= CONNECT_TIMEOUT - EARLY, text
    # ...and gave up on it, give or take gathering, start-up and teardown.
    assert ended.elapsed < CONNECT_TIMEOUT + GATHERING_AND_TEARDOWN, text
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
    assert connection["no_route_text"] in finished.stderr, text  # the diagnosis, printed whole
    diagnosis: dict[str, object] = connection["no_route"]
    return {"observation": observation, **diagnosis}


@pytest.fixture
def lab_prerequisites() -> None:
    require_netlab()


@pytest.mark.usefixtures("lab_prerequisites")
def test_both_behind_symmetric_nats(tmp_path: Path) -> None:
    with NetLab(prefix=f"nr{os.getpid() % 100000}", nat_a="symmetric", nat_b="symmetric") as lab:
        sent, received, out = run_until_no_route(lab, tmp_path)

    for ended, role in ((sent, "sender"), (received, "receiver")):
        found = assert_no_route(ended, role)
        observation = found["observation"]
        assert isinstance(observation, dict)
        # Each side's STUN server answered through its NAT; the paths still failed.
        assert "srflx" in observation["local_types"], found
        assert "srflx" in observation["remote_types"], found
        assert observation["stun_answered"] is True, found
        stderr = ended.finished.stderr
        assert "symmetric" in stderr.lower(), stderr
        assert "forward a udp port" in stderr.lower(), stderr
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
    assert "blocks UDP" in sent.finished.stderr, sent.finished.stderr
    assert "UDP" in received.finished.stderr, received.finished.stderr
    assert not out.exists(), sorted(out.rglob("*"))
