"""The real CLIs through real NATs, a real STUN server and impaired links.

Every test builds its own lab (``tests/netlab.py``) and runs, as separate
processes, ``pipeline-signal`` where the lab puts the signaling server (the
``stun`` namespace, 198.51.100.10:8787), ``pipeline-send`` in ``peer-a`` and
``pipeline-receive`` in ``peer-b``, both with ``--stun`` pointing at the lab's
coturn (STUN only; the tool never uses TURN).  What each test checks is what a
user would notice:

* behind NATs that allow a direct path, the files arrive and verify, and the
  JSON summary names the candidate pair that carried them;
* behind NATs that do not, both sides end ``no_route`` (exit 3) before the
  connect deadline, say in words what they saw and what to do, name different
  causes for "UDP blocked" and "symmetric NAT", and write nothing;
* loss, delay and a rate cap slow a transfer down but do not break it;
* a cut link, a NAT that forgets its mappings, or a path that stays dead
  either resumes (both sides reconnect through the same room, nothing that was
  acknowledged is sent again) or ends ``failed``/``timeout`` on both sides with
  the partial files removed and the verified ones kept (Appendix A.1, A.3).

Sizes are small: the lab moves roughly 15 MB/s with no impairment (64 MiB in
3.8 s, set-up included; both ends are CPU-bound Python, aiortc-facts.md), so
every transfer here takes seconds.  Each test prints the rate it saw, from the
receiver's ``--telemetry`` progress lines (``pytest -s``).  Set
``NAT_SCENARIOS_VERBOSE=1`` to run the CLIs with ``-v`` (their logs are shown
when a test fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.cli_harness import Finished, Proc, new_code
from tests.netlab import STUN_PORT, NetLab, flush_udp_conntrack, require_netlab

pytestmark = [pytest.mark.netlab, pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
EXIT_NO_ROUTE = 3


@pytest.fixture
def lab_prerequisites() -> None:
    require_netlab()


needs_lab = pytest.mark.usefixtures("lab_prerequisites")


def _prefix(name: str) -> str:
    return f"{name}{os.getpid() % 100000}"


# -- files ---------------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes; return their SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def partial_files(out: Path) -> list[Path]:
    """The receiver's unfinished files: ``.name.<token>.part`` (workers/partials.py)."""
    if not out.exists():
        return []
    return [p for p in out.rglob(".*.part") if p.is_file()]


def partial_bytes(out: Path) -> int:
    total = 0
    for path in partial_files(out):
        with contextlib.suppress(FileNotFoundError):  # renamed or deleted meanwhile
            total += path.stat().st_size
    return total


def final_files(out: Path) -> dict[str, Path]:
    if not out.exists():
        return {}
    return {
        str(p.relative_to(out)): p
        for p in out.rglob("*")
        if p.is_file() and not p.name.endswith(".part")
    }


# -- the lab session -----------------------------------------------------------------


class LabSession:
    """One lab, one ``pipeline-signal`` in it, and the CLIs started in the peers."""

    def __init__(self, lab: NetLab, log_dir: Path) -> None:
        self.lab = lab
        self.log_dir = log_dir
        host, port = lab.signaling_address
        self.url = f"ws://{host}:{port}/ws"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.procs: list[Proc] = []
        self.code = new_code()
        self.signal = self._start("signal", "stun", "pipeline.cli.signal_server", ["--host", host, "--port", str(port)], json_out=False)
        lab.wait_listening(self.signal.popen, port)

    def _start(self, name: str, ns: str, module: str, args: Sequence[str], *, json_out: bool = True) -> Proc:
        json_path = self.log_dir / f"{name}.json" if json_out else None
        argv = [sys.executable, "-m", module, *args]
        if json_path is not None:
            argv += ["--json", str(json_path)]
        with open(self.log_dir / f"{name}.out", "w") as out, open(self.log_dir / f"{name}.err", "w") as err:
            popen = self.lab.run(ns, argv, stdout=out, stderr=err, text=True, env=self.env, cwd=self.log_dir)
        proc = Proc(name, popen, self.log_dir, json_path)
        self.procs.append(proc)
        return proc

    def _common(self, extra: Sequence[str]) -> list[str]:
        verbose = ["-v"] * int(os.environ.get("NAT_SCENARIOS_VERBOSE", "0") or 0)  # debugging aid
        # Two STUN servers (the lab's coturn answers on two addresses): ICE uses the
        # first, and the CLI measures its NAT's mapping against both.
        stun = ["--stun", self.lab.stun_url, "--stun", f"stun:{self.lab.addresses['stun2']}:{STUN_PORT}"]
        return ["--signal", self.url, *stun, "--progress", "lines", *verbose, *extra]

    def start_pair(
        self,
        paths: Sequence[Path],
        out: Path,
        *extra: str,
        sender_extra: Sequence[str] = (),
        receiver_extra: Sequence[str] = (),
    ) -> tuple[Proc, Proc]:
        """Sender in peer-a (waits until it joined the room), then receiver in peer-b."""
        sender = self._start(
            "sender", "peer-a", "pipeline.cli.send",
            [*map(str, paths), "--code", self.code, *self._common([*extra, *sender_extra])],
        )  # fmt: skip
        sender.wait_for_output(r"joined the room", 30)
        telemetry = self.log_dir / "receiver.telemetry.jsonl"
        receiver = self._start(
            "receiver", "peer-b", "pipeline.cli.receive",
            [self.code, "--out", str(out), "--yes", "--telemetry", str(telemetry),
             *self._common([*extra, *receiver_extra])],
        )  # fmt: skip
        return sender, receiver

    def logs(self) -> str:
        return "\n".join(p.text() for p in self.procs if p.name != "signal")


@pytest.fixture
def session_factory(tmp_path: Path) -> Iterator[Callable[..., LabSession]]:
    """``session_factory(name, nat_a, nat_b)`` -> a running :class:`LabSession`."""
    labs: list[NetLab] = []

    def make(name: str, nat_a: str, nat_b: str) -> LabSession:
        lab = NetLab(_prefix(name), nat_a=nat_a, nat_b=nat_b)
        lab.start()
        labs.append(lab)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        return LabSession(lab, logs)

    yield make
    for lab in labs:
        lab.close()
        assert lab.leftovers() == [], lab.leftovers()


# -- waiting and checking --------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: str, session: LabSession, poll: float = 0.05) -> float:
    """Poll ``condition`` until true; returns the seconds it took.  Fails with the logs."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic() - started
        if any(p.popen.poll() is not None for p in session.procs if p.name in ("sender", "receiver")):
            if condition():
                return time.monotonic() - started
            break
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout} s (or a CLI exited)\n{session.logs()}")


class Timeline:
    """When each CLI was seen to exit, and how fast the receiver's bytes moved."""

    def __init__(self, telemetry: Path) -> None:
        self.telemetry = telemetry
        self.exited: dict[str, float] = {}  # process name -> when it was seen to exit

    def data_rate(self) -> float | None:
        """Bytes per second from the first received byte to the last, from the
        receiver's ``--telemetry`` progress lines (no set-up, no teardown; stalls
        and reconnects included)."""
        points = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.telemetry.read_text().splitlines():
                record = json.loads(line)
                if record.get("type") == "progress" and record["bytes_done"] > 0:
                    points.append((record["t"], record["bytes_done"]))
        if len(points) < 2:
            return None
        last = max(points, key=lambda p: p[1])
        last_t = min(t for t, done in points if done == last[1])
        first_t, first_done = points[0]
        return (last[1] - first_done) / (last_t - first_t) if last_t > first_t else None


def finish(session: LabSession, sender: Proc, receiver: Proc, timeout: float) -> tuple[Finished, Finished, Timeline]:
    """Wait for both CLIs; both must write a JSON summary."""
    timeline = Timeline(session.log_dir / "receiver.telemetry.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (sender.popen.poll() is None or receiver.popen.poll() is None):
        now = time.monotonic()
        for proc in (sender, receiver):
            if proc.name not in timeline.exited and proc.popen.poll() is not None:
                timeline.exited[proc.name] = now
        time.sleep(0.05)
    ended = time.monotonic()
    for proc in (sender, receiver):
        if proc.name not in timeline.exited and proc.popen.poll() is not None:
            timeline.exited[proc.name] = ended
    s = sender.wait(max(1.0, deadline - time.monotonic()))
    r = receiver.wait(max(1.0, deadline - time.monotonic()))
    for name, result in (("sender", s), ("receiver", r)):
        assert result.summary is not None, f"{name} wrote no JSON summary (exit {result.returncode})\n{session.logs()}"
    return s, r, timeline


def assert_completed(session: LabSession, s: Finished, r: Finished, expected: dict[str, str], out: Path) -> None:
    """Both exit 0, every file arrived with the sender's digest, no partial is left."""
    assert (s.returncode, r.returncode) == (0, 0), session.logs()
    assert s.summary is not None and r.summary is not None
    assert s.summary["outcome"] == r.summary["outcome"] == "completed"
    assert r.summary["files_verified"] == len(expected)
    received = final_files(out)
    assert sorted(received) == sorted(expected), sorted(received)
    for name, digest in expected.items():
        assert sha256_of(received[name]) == digest, f"{name} differs from what was sent"
    assert partial_files(out) == []


def assert_pair_named(summary: dict[str, Any], lab: NetLab, side: str) -> None:
    """connection.selected_pair: our host candidate and the peer's public (NAT) address."""
    pair = summary["connection"].get("selected_pair")
    assert pair is not None, json.dumps(summary["connection"])
    other = "b" if side == "a" else "a"
    assert pair["local"]["type"] == "host"
    assert pair["local"]["address"] == lab.addresses[f"peer-{side}"]
    assert pair["remote"]["type"] in ("srflx", "prflx")
    assert pair["remote"]["address"] == lab.addresses[f"nat-{other}"]
    assert isinstance(pair["local"]["port"], int) and isinstance(pair["remote"]["port"], int)
    assert isinstance(pair["rtt_ms"], int | float) and pair["rtt_ms"] > 0
    assert "relay" not in summary["connection"]["local_candidate_types"]


def rate_line(label: str, r: Finished, timeline: Timeline) -> str:
    assert r.summary is not None
    rate = timeline.data_rate()
    shown = f"{rate / 1e6:.2f} MB/s" if rate else "n/a"
    return (
        f"{label}: {r.summary['bytes_transferred'] / MiB:.1f} MiB, moving at {shown} "
        f"(receiver summary incl. set-up: {r.summary['throughput_bytes_per_s'] / 1e6:.2f} MB/s "
        f"over {r.summary['duration_s']:.1f} s)"
    )


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"{section}:")
        lines += [f"  {key}: {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- 1. direct paths -------------------------------------------------------------------


@needs_lab
@pytest.mark.parametrize(("nat_a", "nat_b"), [("cone", "cone"), ("full_cone", "symmetric")])
def test_transfer_through_nats(nat_a: str, nat_b: str, tmp_path: Path, session_factory: Callable[..., LabSession]) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    expected = {"one.bin": make_file(src / "one.bin", 3 * MiB), "two.bin": make_file(src / "two.bin", 1 * MiB + 17)}
    session = session_factory("nc", nat_a, nat_b)
    sender, receiver = session.start_pair([src / "one.bin", src / "two.bin"], out)
    s, r, timeline = finish(session, sender, receiver, 60)
    print(f"\n{nat_a}<->{nat_b}: {rate_line('transfer', r, timeline)}")
    assert_completed(session, s, r, expected, out)
    assert s.summary is not None and r.summary is not None
    assert_pair_named(s.summary, session.lab, "a")
    assert_pair_named(r.summary, session.lab, "b")
    assert "connected directly" in s.stderr and "connected directly" in r.stderr
    if nat_b == "symmetric":
        # The symmetric side's checks came from a port it never signalled: the
        # full cone learned it as peer-reflexive.
        assert s.summary["connection"]["selected_pair"]["remote"]["type"] == "prflx"
    # Each side measured its own NAT against the two STUN addresses.
    for summary, nat in ((s.summary, nat_a), (r.summary, nat_b)):
        mapping = summary["connection"]["nat_mapping"]
        assert mapping is not None and mapping["symmetric"] is (nat == "symmetric"), mapping


# -- 2. no route -------------------------------------------------------------------------

CONNECT_TIMEOUT = 8.0
# aiortc blocks 5 s in setLocalDescription when STUN does not answer (aiortc-facts.md).
GATHER_ALLOWANCE = 5.0
START_ALLOWANCE = 6.0  # interpreter, imports, worker processes, signaling


@needs_lab
@pytest.mark.parametrize(
    ("nat_a", "nat_b"), [("symmetric", "symmetric"), ("cone", "symmetric"), ("udp_blocked", "cone")]
)
def test_no_route_is_explained(nat_a: str, nat_b: str, tmp_path: Path, session_factory: Callable[..., LabSession]) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_file(src / "f.bin", 1 * MiB)
    session = session_factory("nr", nat_a, nat_b)
    started = time.monotonic()
    sender, receiver = session.start_pair([src / "f.bin"], out, "--connect-timeout", str(CONNECT_TIMEOUT))
    s, r, _ = finish(session, sender, receiver, CONNECT_TIMEOUT + 40)
    elapsed = time.monotonic() - started
    assert s.summary is not None and r.summary is not None
    causes = {
        side: summary["connection"].get("no_route", {}).get("cause")
        for side, summary in (("a", s.summary), ("b", r.summary))
    }
    print(f"\n{nat_a}<->{nat_b}: exit {s.returncode}/{r.returncode} after {elapsed:.1f} s, causes {causes}")

    assert (s.returncode, r.returncode) == (EXIT_NO_ROUTE, EXIT_NO_ROUTE), session.logs()
    assert elapsed < CONNECT_TIMEOUT + GATHER_ALLOWANCE + START_ALLOWANCE, f"took {elapsed:.1f} s"
    for result, summary in ((s, s.summary), (r, r.summary)):
        assert summary["outcome"] == "no_route"
        assert summary["connection"].get("selected_pair") is None
        diagnosis = summary["connection"]["no_route"]
        assert diagnosis["summary"] and diagnosis["likely"] and diagnosis["advice"]
        # Plain words on stderr: what was seen, what it means, what to do.
        for phrase in ("No direct connection could be made", "What we saw:", "Most likely:", "What you can do:"):
            assert phrase in result.stderr, result.stderr
        assert diagnosis["likely"] in result.stderr
        assert not re.search(r"\bTURN\b", result.stderr), "advice names a relay this tool refuses to use"
    # Nothing written (the receiver removes the --out directory it created).
    assert final_files(out) == {} and partial_files(out) == []

    seen = {side: summary["connection"]["observation"] for side, summary in (("a", s.summary), ("b", r.summary))}
    if nat_a == "udp_blocked":
        # Whether STUN answered, and which candidates were gathered (A.4).
        assert seen["a"]["stun_answered"] is False and seen["a"]["local_types"] == ["host"]
        assert seen["b"]["stun_answered"] is True and "srflx" in seen["b"]["local_types"]
        assert causes["a"] == "udp_blocked"
        assert "block" in s.stderr.lower() and "UDP" in s.stderr
        # The cone side saw a peer with only a private address.
        assert causes["b"] == "peer_no_public_address"
        assert s.summary["connection"]["no_route"]["cause"] != "symmetric_nat_both"
    else:
        # Both learned public addresses; no check got through either way. Each side
        # measured its own NAT (two STUN addresses), so each names its own part:
        # behind the symmetric NAT "mine picks new ports", behind the cone "the
        # other side's does, or it filters".
        for side in ("a", "b"):
            assert seen[side]["stun_answered"] is True and "srflx" in seen[side]["local_types"]
        expected = {"symmetric": "symmetric_nat_here", "cone": "peer_filters"}
        assert causes == {"a": expected[nat_a], "b": expected[nat_b]}, causes
        assert "symmetric NAT" in (s.stderr if nat_a == "symmetric" else r.stderr)


# -- 3. impairments ----------------------------------------------------------------------


def _delay_and_loss(lab: NetLab) -> None:
    lab.delay("a", 20)  # each way through nat-a: 40 ms round trip
    lab.loss("a", 0.01)


def _long_delay_and_loss(lab: NetLab) -> None:
    lab.delay("a", 50)  # 100 ms round trip
    lab.loss("a", 0.02)


def _loss_only(lab: NetLab) -> None:
    lab.loss("a", 0.05)


def _rate_cap(lab: NetLab) -> None:
    lab.rate("a", "8mbit")


@needs_lab
@pytest.mark.parametrize(
    ("label", "impair", "size"),
    [
        ("40ms RTT + 1% loss", _delay_and_loss, 3 * MiB),
        ("100ms RTT + 2% loss", _long_delay_and_loss, 2 * MiB),
        ("5% loss", _loss_only, 8 * MiB),
        ("8 Mbit/s cap", _rate_cap, 6 * MiB),
    ],
    ids=["delay-loss", "long-delay-loss", "loss", "rate"],
)
def test_transfer_survives_impairment(
    label: str, impair: Callable[[NetLab], None], size: int, tmp_path: Path, session_factory: Callable[..., LabSession]
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    expected = {"f.bin": make_file(src / "f.bin", size)}
    session = session_factory("im", "cone", "cone")
    impair(session.lab)
    sender, receiver = session.start_pair([src / "f.bin"], out)
    s, r, timeline = finish(session, sender, receiver, 90)
    print(f"\n{label}: {rate_line('transfer', r, timeline)}")
    assert_completed(session, s, r, expected, out)
    if "RTT" in label:
        assert s.summary is not None
        rtt = s.summary["connection"]["selected_pair"]["rtt_ms"]
        assert rtt is not None and rtt >= 30, f"the delayer did not delay (RTT {rtt} ms)"


@needs_lab
def test_transfer_survives_an_rtt_rise(tmp_path: Path, session_factory: Callable[..., LabSession]) -> None:
    """The RTT rises from ~1 ms to 40 ms mid-transfer (the flight cap follows it,
    sctp_path): the same bytes arrive, one terminal outcome each side."""
    src, out = tmp_path / "src", tmp_path / "out"
    expected = {"f.bin": make_file(src / "f.bin", 24 * MiB)}
    session = session_factory("rr", "cone", "cone")
    sender, receiver = session.start_pair([src / "f.bin"], out)
    wait_for_progress(session, out, 2 * MiB)
    session.lab.delay("a", 20)
    s, r, timeline = finish(session, sender, receiver, 90)
    print(f"\nRTT rise: {rate_line('transfer', r, timeline)}")
    assert_completed(session, s, r, expected, out)


# -- 4-7. losing the path ------------------------------------------------------------------

# Short timers so that a lost connection is noticed and handled within seconds.
SHORT_TIMERS = {"progress_timeout": 3, "reconnect_timeout": 40}
WINDOW = 64
# The first retransmission timeout above the progress watchdog: while the path
# is silent the sender would otherwise resend its oldest frame into the dead
# channel once before the watchdog fires, and "retransmitted_frames <= window"
# would no longer measure what the resume frame saved (A.3).
TRANSFER = {"window": WINDOW, "rto_initial": 5}


def _connections(summary: dict[str, Any]) -> int:
    return int(summary["connection"].get("connections", 0))


def wait_for_progress(session: LabSession, out: Path, at_least: int) -> None:
    """Wait until the receiver has written ``at_least`` bytes of a file still in progress."""
    wait_until(lambda: partial_bytes(out) >= at_least, 60, f"{at_least} bytes received", session)
    assert final_files(out) == {}, "the transfer finished before the link could be cut"


def assert_stalled(session: LabSession, out: Path) -> None:
    """While the link is cut nothing arrives (the cut is real).

    The first second is skipped: datagrams already in the receiver's socket
    buffer (4 MiB, ice_probe.set_receive_buffer) are still written after the cut.
    """
    time.sleep(1.0)
    before = partial_bytes(out)
    time.sleep(1.0)
    assert partial_bytes(out) - before < MiB // 2, "data still flows through a cut link\n" + session.logs()


@needs_lab
def test_short_cut_mid_transfer_completes(tmp_path: Path, session_factory: Callable[..., LabSession]) -> None:
    """A 10 s cut: the transfer continues, or reconnects, and completes (default timers)."""
    src, out = tmp_path / "src", tmp_path / "out"
    size = 40 * MiB
    expected = {"f.bin": make_file(src / "f.bin", size)}
    session = session_factory("ct", "cone", "cone")
    sender, receiver = session.start_pair([src / "f.bin"], out)
    wait_for_progress(session, out, 2 * MiB)
    session.lab.cut("a")
    cut_at = time.monotonic()
    assert_stalled(session, out)
    time.sleep(max(0.0, cut_at + 10.0 - time.monotonic()))
    session.lab.restore("a")
    s, r, timeline = finish(session, sender, receiver, 90)
    assert s.summary is not None and r.summary is not None
    print(
        f"\n10 s cut: {rate_line('transfer', r, timeline)}; connections "
        f"{_connections(s.summary)}/{_connections(r.summary)}, retransmitted {s.summary['retransmitted_frames']}"
    )
    assert_completed(session, s, r, expected, out)
    assert r.summary["duplicate_frames"] == 0


@needs_lab
def test_long_cut_reconnects_and_resumes(tmp_path: Path, session_factory: Callable[..., LabSession]) -> None:
    """A cut past the progress watchdog: a new peer connection in the same room, resume, verify."""
    src, out = tmp_path / "src", tmp_path / "out"
    size = 40 * MiB
    expected = {"f.bin": make_file(src / "f.bin", size)}
    config = write_config(tmp_path / "short.yaml", ice=SHORT_TIMERS, transfer=TRANSFER)
    session = session_factory("lc", "cone", "cone")
    sender, receiver = session.start_pair([src / "f.bin"], out, "--config", str(config))
    wait_for_progress(session, out, 2 * MiB)
    session.lab.cut("a")
    cut_at = time.monotonic()
    assert_stalled(session, out)
    time.sleep(max(0.0, cut_at + 8.0 - time.monotonic()))
    session.lab.restore("a")
    s, r, timeline = finish(session, sender, receiver, 90)
    assert s.summary is not None and r.summary is not None
    print(
        f"\n8 s cut, short timers: {rate_line('transfer', r, timeline)}; connections "
        f"{_connections(s.summary)}/{_connections(r.summary)}, retransmitted {s.summary['retransmitted_frames']}, "
        f"duplicates {r.summary['duplicate_frames']}"
    )
    assert_completed(session, s, r, expected, out)
    assert _connections(s.summary) >= 2 and _connections(r.summary) >= 2, "no reconnect happened"
    assert "reconnected" in s.stderr and "reconnected" in r.stderr
    # Resume honoured (A.3): only unacknowledged frames were sent again.
    assert s.summary["retransmitted_frames"] <= WINDOW
    assert r.summary["duplicate_frames"] == 0


def _forget_all(lab: NetLab) -> None:
    lab.flush_conntrack("b")  # UDP and TCP: the signaling socket through nat-b dies too


def _forget_udp(lab: NetLab) -> None:
    assert flush_udp_conntrack(lab, "b") >= 1  # the signaling socket survives


@needs_lab
@pytest.mark.parametrize("forget", [_forget_all, _forget_udp], ids=["all-mappings", "udp-mappings"])
def test_nat_rebinding_is_detected_and_recovered(
    forget: Callable[[NetLab], None], tmp_path: Path, session_factory: Callable[..., LabSession]
) -> None:
    """The symmetric NAT forgets its mappings mid-transfer: the watchdog notices, both reconnect.

    Data from the full-cone sender goes to a port the symmetric NAT no longer
    maps, while aiortc still says ``connected`` (netlab.md): only the progress
    watchdog notices.  Forgetting *all* mappings also kills the receiver's
    signaling socket, so the receiver has to rejoin the room (C.5).
    """
    src, out = tmp_path / "src", tmp_path / "out"
    size = 40 * MiB
    expected = {"f.bin": make_file(src / "f.bin", size)}
    config = write_config(tmp_path / "short.yaml", ice=SHORT_TIMERS, transfer=TRANSFER)
    session = session_factory("rb", "full_cone", "symmetric")
    sender, receiver = session.start_pair([src / "f.bin"], out, "--config", str(config))
    wait_for_progress(session, out, 2 * MiB)
    forget(session.lab)
    s, r, timeline = finish(session, sender, receiver, 90)
    assert s.summary is not None and r.summary is not None
    print(
        f"\nNAT rebinding ({forget.__name__}): {rate_line('transfer', r, timeline)}; exit {s.returncode}/{r.returncode}, "
        f"connections {_connections(s.summary)}/{_connections(r.summary)}, "
        f"retransmitted {s.summary['retransmitted_frames']}, duplicates {r.summary['duplicate_frames']}"
    )
    assert _connections(s.summary) >= 2 and _connections(r.summary) >= 2, "no reconnect happened\n" + session.logs()
    assert_completed(session, s, r, expected, out)
    assert "reconnected" in s.stderr and "reconnected" in r.stderr
    assert s.summary["retransmitted_frames"] <= WINDOW
    assert r.summary["duplicate_frames"] == 0


@needs_lab
def test_dead_link_times_out_and_cleans_up(tmp_path: Path, session_factory: Callable[..., LabSession]) -> None:
    """Cut for good: both end failed/timeout; verified files stay, the partial one goes."""
    src, out = tmp_path / "src", tmp_path / "out"
    small = {f"a{i}.bin": make_file(src / f"a{i}.bin", 1 * MiB) for i in range(5)}
    big = 30 * MiB
    make_file(src / "z-big.bin", big)
    reconnect_timeout = 8
    config = write_config(
        tmp_path / "short.yaml",
        ice={"progress_timeout": 3, "reconnect_timeout": reconnect_timeout},
        transfer=TRANSFER,
    )
    session = session_factory("dl", "cone", "cone")
    paths = [src / name for name in sorted(small)] + [src / "z-big.bin"]
    sender, receiver = session.start_pair(paths, out, "--config", str(config))
    wait_until(
        lambda: len(final_files(out)) == len(small) and partial_bytes(out) > 0,
        60,
        "the small files verified and the big one in progress",
        session,
        poll=0.01,
    )
    session.lab.cut("a")
    cut_at = time.monotonic()
    assert final_files(out).keys() == small.keys() and partial_bytes(out) < big
    s, r, timeline = finish(session, sender, receiver, 3 + reconnect_timeout + 60)
    assert s.summary is not None and r.summary is not None
    after_cut = {name: round(at - cut_at, 1) for name, at in timeline.exited.items()}
    print(f"\ndead link: exit {s.returncode}/{r.returncode}, seconds after the cut: {after_cut}")

    assert (s.returncode, r.returncode) == (1, 1), session.logs()
    for summary in (s.summary, r.summary):
        assert summary["outcome"] == "failed"
        assert summary["error_code"] == "timeout", summary["message"]
    received = final_files(out)
    assert sorted(received) == sorted(small), sorted(received)
    for name, digest in small.items():
        assert sha256_of(received[name]) == digest
    assert partial_files(out) == [], "the unverified partial file was left behind"
    assert r.summary["files_verified"] == len(small)
    # The reconnect deadline is a deadline (A.1): watchdog + reconnect_timeout,
    # plus a few seconds for cleanup and exit.
    for name, seconds in after_cut.items():
        assert seconds < 3 + reconnect_timeout + 8, f"{name} gave up {seconds} s after the cut\n{session.logs()}"
