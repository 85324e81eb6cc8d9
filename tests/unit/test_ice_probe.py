"""ice_probe (and PeerLink's ICE setup) against real RTCPeerConnections in one event loop.

Host candidates only (``iceServers=[]``): aioice skips 127.0.0.1 when gathering,
so the pair runs over this machine's own interface addresses (traffic to
them never leaves the machine).  The in-process STUN responders listen on
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, cast

import aioice.stun
import pytest
import uvloop
from aioice import stun
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from pipeline.config import IceConfig
from pipeline.connection import ice_probe, peer
from pipeline.connection.diagnostics import Observation
from pipeline.connection.peer import NoRoute, PeerLink, RoomChannel

pytestmark = pytest.mark.timeout(60)

LOOPS = ["asyncio", "uvloop"]


def run(loop_kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if loop_kind == "uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


def host_addresses() -> list[str]:
    from aioice.ice import get_host_addresses

    return get_host_addresses(use_ipv4=True, use_ipv6=True)


requires_host_address = pytest.mark.skipif(
    not host_addresses(), reason="no non-loopback address: aioice gathers no host candidate"
)


async def connect_pair(a: RTCPeerConnection, b: RTCPeerConnection, timeout: float = 10.0) -> None:
    """Offer/answer in memory, watching both sides, until the channel opens."""
    channel = a.createDataChannel("probe")
    assert ice_probe.watch(a)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    assert ice_probe.watch(b)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await asyncio.wait_for(opened.wait(), timeout)


class StunResponder(asyncio.DatagramProtocol):
    """Answers Binding requests; ``port_offset`` fakes a symmetric NAT."""

    def __init__(self, port_offset: int = 0) -> None:
        self.port_offset = port_offset
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = stun.parse_message(data)
        if message.message_class != stun.Class.REQUEST:
            return
        self.requests += 1
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1] + self.port_offset)
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


async def start_responder(port_offset: int = 0) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: StunResponder(port_offset), local_addr=("127.0.0.1", 0)
    )
    return transport, transport.get_extra_info("sockname")[1]


@pytest.fixture
def fast_stun_failure() -> Iterator[None]:
    """One STUN try (0.5 s) instead of seven, so an unanswered STUN fails fast."""
    saved = aioice.stun.RETRY_MAX
    aioice.stun.RETRY_MAX = 0
    yield
    aioice.stun.RETRY_MAX = saved


# -- the contract with the pinned versions ------------------------------------------


def test_internals_shape() -> None:
    """The private chain ice_probe reads exists in the installed aiortc/aioice."""

    async def main() -> list[str]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.createDataChannel("shape")
            return ice_probe.internals_problems(pc)
        finally:
            await pc.close()

    problems = run("asyncio", main)
    assert problems == [], (
        "aiortc/aioice changed shape; pipeline/connection/ice_probe.py must be updated "
        "(it was written for aiortc 1.16 / aioice 0.13):\n  " + "\n  ".join(problems)
    )
    ice_probe.assert_internals()  # class-level part, what the app checks at start-up


def test_assert_internals_names_the_problem() -> None:
    class Fake:
        sctp = None

    problems = ice_probe.internals_problems(Fake())  # type: ignore[arg-type]
    assert problems == ["pc.sctp is None: create a DataChannel or set a remote description first"]
    with pytest.raises(RuntimeError, match=r"update pipeline/connection/ice_probe\.py"):
        ice_probe.assert_internals(Fake())  # type: ignore[arg-type]


# -- a connected pair ----------------------------------------------------------------


@requires_host_address
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_probes_on_connected_pair(loop_kind: str) -> None:
    async def main() -> dict[str, Any]:
        a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await connect_pair(a, b)
            result: dict[str, Any] = {}
            for name, pc in (("a", a), ("b", b)):
                before = ice_probe.receive_buffer_sizes(pc)
                result[name] = {
                    "connection": ice_probe.ice_connection(pc),
                    "local": ice_probe.local_candidate_types(pc),
                    "remote": ice_probe.remote_candidate_types(pc),
                    "sdp_types": ice_probe.sdp_candidate_types(pc.localDescription.sdp),
                    "stun": ice_probe.stun_answered(pc),
                    "checks": ice_probe.checks_received_from_peer(pc),
                    "sources": ice_probe.incoming_check_sources(pc),
                    "answered": ice_probe.our_checks_answered(pc),
                    "pairs": ice_probe.pair_states(pc),
                    "rtt": await ice_probe.measure_rtt(pc),
                    "selected": ice_probe.selected_pair(pc),
                    "observation": ice_probe.observe(pc),
                    "buffers_before": before,
                    "set": ice_probe.set_receive_buffer(pc),
                    "buffers_after": ice_probe.receive_buffer_sizes(pc),
                }
            return result
        finally:
            await a.close()
            await b.close()

    result = run(loop_kind, main)
    a, b = result["a"], result["b"]
    for side, other in ((a, b), (b, a)):
        assert side["connection"] is not None
        assert side["local"] == ["host"]
        assert side["remote"] == ["host"]
        assert side["sdp_types"] == ["host"]
        assert side["stun"] is None  # no STUN server configured
        assert side["checks"] is True
        assert side["answered"] is True
        selected = side["selected"]
        assert selected is not None
        assert selected["local"]["type"] == "host"
        assert selected["remote"]["type"] == "host"
        assert selected["local"]["protocol"] == "udp"
        assert selected["local"]["address"] in host_addresses()
        assert selected["remote"]["address"] in host_addresses()
        assert selected["local"]["port"] > 0 and selected["remote"]["port"] > 0
        # Each side's selected pair is the other's, mirrored.
        assert selected["local"] == other["selected"]["remote"]
        # The peer's checks came from the port its selected pair uses.
        peer_local = other["selected"]["local"]
        assert (peer_local["address"], peer_local["port"]) in side["sources"]
        assert side["rtt"] is not None and 0 < side["rtt"] < 1000
        assert selected["rtt_ms"] is not None and selected["rtt_ms"] <= side["rtt"]
        assert any(p["nominated"] and p["state"] == "succeeded" for p in side["pairs"])
        assert side["observation"] == Observation(
            stun_configured=False,
            stun_answered=None,
            local_types=["host"],
            remote_types=["host"],
            remote_addresses_private_only=side["observation"].remote_addresses_private_only,
            checks_from_peer=True,
            our_checks_answered=True,
        )
        assert side["set"] >= 1
        assert len(side["buffers_after"]) == side["set"]
        # Linux reports twice the requested size; SO_RCVBUFFORCE ignores rmem_max.
        assert min(side["buffers_after"]) >= ice_probe.DEFAULT_RECEIVE_BUFFER
        assert min(side["buffers_after"]) > max(side["buffers_before"])
    # Exactly one side controls, and it nominated the pair itself.
    assert any(p["remote_nominated"] for p in b["pairs"])


def test_probes_before_any_connection() -> None:
    async def main() -> list[object]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            return [
                ice_probe.ice_connection(pc),
                ice_probe.local_candidate_types(pc),
                ice_probe.remote_candidate_types(pc),
                ice_probe.selected_pair(pc),
                ice_probe.stun_answered(pc),
                ice_probe.checks_received_from_peer(pc),
                ice_probe.pair_states(pc),
                ice_probe.set_receive_buffer(pc),
                ice_probe.watch(pc),
                await ice_probe.measure_rtt(pc),
            ]
        finally:
            await pc.close()

    assert run("asyncio", main) == [None, [], [], None, None, False, [], 0, False, None]


# -- STUN ------------------------------------------------------------------------------


@requires_host_address
def test_stun_answered_with_a_local_stun_server() -> None:
    async def main() -> tuple[bool | None, list[str], list[str]]:
        transport, port = await start_responder()
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[RTCIceServer(f"stun:127.0.0.1:{port}")])
        )
        try:
            pc.createDataChannel("stun")
            await pc.setLocalDescription(await pc.createOffer())
            return (
                ice_probe.stun_answered(pc),
                ice_probe.local_candidate_types(pc),
                ice_probe.sdp_candidate_types(pc.localDescription.sdp),
            )
        finally:
            await pc.close()
            transport.close()

    answered, local, sdp_types = run("asyncio", main)
    assert answered is True
    assert local == ["host", "srflx"]
    assert sdp_types == ["host", "srflx"]


@requires_host_address
def test_stun_not_answered(fast_stun_failure: None) -> None:
    async def main() -> tuple[bool | None, list[str], bool]:
        # A bound socket that never answers: STUN requests go unanswered.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[RTCIceServer(f"stun:127.0.0.1:{port}")])
        )
        try:
            pc.createDataChannel("stun")
            await pc.setLocalDescription(await pc.createOffer())
            return (
                ice_probe.stun_answered(pc),
                ice_probe.local_candidate_types(pc),
                ice_probe.observe(pc).stun_configured,
            )
        finally:
            await pc.close()
            silent.close()

    answered, local, configured = run("asyncio", main)
    assert answered is False
    assert local == ["host"]
    assert configured is True


@pytest.mark.parametrize(("offset", "symmetric"), [(0, False), (7, True)])
def test_probe_nat_mapping(offset: int, symmetric: bool) -> None:
    async def main() -> ice_probe.NatMapping:
        first, port1 = await start_responder()
        second, port2 = await start_responder(port_offset=offset)
        try:
            return await ice_probe.probe_nat_mapping(
                [("127.0.0.1", port1), ("127.0.0.1", port2)], timeout=2.0, local_host="127.0.0.1"
            )
        finally:
            first.close()
            second.close()

    mapping = run("asyncio", main)
    answers = list(mapping.mapped.values())
    assert all(a is not None and a[0] == "127.0.0.1" for a in answers)
    assert mapping.symmetric is symmetric
    assert mapping.to_dict()["symmetric"] is symmetric


def test_probe_nat_mapping_without_answers() -> None:
    async def main() -> ice_probe.NatMapping:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            return await ice_probe.probe_nat_mapping(
                [silent.getsockname(), ("127.0.0.1", 9)], timeout=0.3, local_host="127.0.0.1"
            )
        finally:
            silent.close()

    mapping = run("asyncio", main)
    assert set(mapping.mapped.values()) == {None}
    assert mapping.symmetric is None


# -- pure helpers ----------------------------------------------------------------------

SDP = """v=0
o=- 1 1 IN IP4 0.0.0.0
m=application 9 DTLS/SCTP 5000
a=candidate:1 1 udp 2130706431 10.0.1.2 50000 typ host
a=candidate:2 1 udp 1694498815 198.51.100.2 50000 typ srflx raddr 10.0.1.2 rport 50000
a=candidate:3 1 UDP 16777215 203.0.113.9 3478 typ relay raddr 0.0.0.0 rport 9
a=candidate:4 1 udp 1845501695 192.0.2.9 6000 typ prflx
a=candidate:5 1 udp 2130706431 a1b2.local 50001 typ host
a=end-of-candidates
"""


def test_sdp_candidate_types() -> None:
    assert ice_probe.sdp_candidate_types(SDP) == ["host", "srflx", "prflx", "relay"]
    assert ice_probe.sdp_candidate_types("v=0\r\nm=application 9 x\r\n") == []
    crlf = "a=candidate:1 1 udp 1 10.0.0.1 1 typ srflx\r\n"
    assert ice_probe.sdp_candidate_types(crlf) == ["srflx"]
    # A trickled candidate attribute without the "a=" prefix.
    assert ice_probe.sdp_candidate_types("candidate:1 1 udp 1 ::1 9 typ host") == ["host"]


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("10.0.1.2", True),
        ("172.20.0.1", True),
        ("192.168.1.10", True),
        ("100.64.3.4", True),
        ("169.254.1.1", True),
        ("fd00::2", True),
        ("fe80::1%eth0", True),
        ("4f1c7d2e-1111-2222-3333-444455556666.local", True),
        ("198.51.100.2", False),  # the network lab's "public" Internet
        ("8.8.8.8", False),
        ("2001:db8::1", False),
    ],
)
def test_is_private_address(host: str, private: bool) -> None:
    assert ice_probe.is_private_address(host) is private


# -- PeerLink: ICE servers and the connect deadline ------------------------------------


def test_default_peer_link_uses_no_ice_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STUN configured: iceServers=[] (host candidates only), never None, which
    would make aiortc ask Google's public STUN server: tests and defaults never
    contact an outside address."""
    built: list[RTCConfiguration | None] = []

    class Recording(RTCPeerConnection):
        def __init__(self, configuration: RTCConfiguration | None = None) -> None:
            built.append(configuration)
            super().__init__(configuration)

    monkeypatch.setattr(peer, "RTCPeerConnection", Recording)

    async def stun_server_of(stun_servers: list[str]) -> tuple[object, object, list[str]]:
        link = PeerLink(stun_servers)
        try:
            link.pc.createDataChannel("servers")
            connection = ice_probe.ice_connection(link.pc)
            assert connection is not None
            return connection.stun_server, connection.turn_server, link.ice_server_urls()
        finally:
            await link.close(graceful=False)

    default = IceConfig().stun_servers
    assert default == []
    stun_server, turn_server, urls = run("asyncio", lambda: stun_server_of(default))
    assert len(built) == 1 and built[0] is not None
    assert built[0].iceServers == [] and built[0].iceServers is not None
    assert (stun_server, turn_server, urls) == (None, None, [])
    # The check sees a configured server (so the None above means none at all)...
    configured = run("asyncio", lambda: stun_server_of(["stun:127.0.0.1:3478"]))
    assert configured == (("127.0.0.1", 3478), None, ["stun:127.0.0.1:3478"])

    # ...and what None would have meant.
    async def unconfigured() -> object:
        pc = RTCPeerConnection(RTCConfiguration())
        try:
            pc.createDataChannel("servers")
            connection = ice_probe.ice_connection(pc)
            assert connection is not None
            return connection.stun_server
        finally:
            await pc.close()

    assert run("asyncio", unconfigured) == ("stun.l.google.com", 19302)


class MemoryRoom:
    """The signaling room in memory: what the link sends is kept with its time;
    the test feeds ``signals``."""

    def __init__(self) -> None:
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.sent_one = asyncio.Event()

    async def send(self, data: dict[str, Any]) -> None:
        self.sent.append((time.monotonic(), data))
        self.sent_one.set()


def ipv4_host_address() -> str:
    for address in host_addresses():
        if ipaddress.ip_address(address.partition("%")[0]).version == 4:
            return address
    pytest.skip("no non-loopback IPv4 address")


def unreachable(sdp: str, address: str, port: int) -> str:
    """``sdp`` with its candidates replaced by one that never answers: no route."""
    lines = [line for line in sdp.splitlines() if not line.startswith("a=candidate:")]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=end-of-candidates"))
    lines.insert(at, f"a=candidate:1 1 udp 2130706431 {address} {port} typ host")
    return "\r\n".join(lines) + "\r\n"


# The connect deadline in these tests: short, yet long against scheduling noise.
CONNECT_TIMEOUT = 4.0
ANSWER_DELAY = 2.0  # the receiver's gathering, stretched: under CONNECT_TIMEOUT
MARGIN = 0.5  # early wake-ups of the loop's timers and the like; never a speed bound


@requires_host_address
def test_sender_connect_deadline_runs_from_the_answer() -> None:
    """A.1: the connect deadline counts from the descriptions' exchange, not from
    the offer: a late answer (the receiver gathering) leaves ICE its whole time."""

    async def main() -> tuple[float, float, float, float | None, BaseException | None]:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((ipv4_host_address(), 0))
        sender = PeerLink([])
        receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        room = MemoryRoom()
        try:
            offering = asyncio.ensure_future(
                sender.offer(
                    cast(RoomChannel, room),
                    ordered=True,
                    max_retransmits=None,
                    max_packet_life_time=None,
                    timeout=CONNECT_TIMEOUT,
                )
            )
            await room.sent_one.wait()
            offered_at, offer = room.sent[0]
            # Neither side learns where the other is: no check can get through.
            address, port = silent.getsockname()
            offer_sdp = unreachable(offer["sdp"], address, port)
            await receiver.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await receiver.setLocalDescription(await receiver.createAnswer())
            await asyncio.sleep(max(0.0, offered_at + ANSWER_DELAY - time.monotonic()))
            answered_at = time.monotonic()
            room.signals.put_nowait({"type": "answer", "sdp": unreachable(receiver.localDescription.sdp, address, port)})
            error = None
            try:
                await offering
            except NoRoute as exc:
                error = exc
            return offered_at, answered_at, time.monotonic(), sender.exchanged_at, error
        finally:
            await sender.close(graceful=False)
            await receiver.close()
            silent.close()

    offered_at, answered_at, gave_up_at, exchanged_at, error = run("asyncio", main)
    assert answered_at - offered_at < CONNECT_TIMEOUT - MARGIN, "the answer came too late to test anything"
    assert isinstance(error, NoRoute)
    assert exchanged_at is not None and exchanged_at >= answered_at
    # Measured from the offer (the old way) it would give up ANSWER_DELAY s earlier.
    assert gave_up_at - answered_at >= CONNECT_TIMEOUT - MARGIN, (offered_at, answered_at, gave_up_at)


def test_sender_wait_for_the_answer_is_bounded() -> None:
    """No answer at all: the sender still gives up (no_route), after the connect timeout."""

    async def main() -> tuple[float, float, float | None]:
        sender = PeerLink([])
        room = MemoryRoom()
        try:
            offering = sender.offer(
                cast(RoomChannel, room), ordered=True, max_retransmits=None, max_packet_life_time=None, timeout=1.0
            )
            with pytest.raises(NoRoute):
                await asyncio.wait_for(offering, 30.0)
            return room.sent[0][0], time.monotonic(), sender.exchanged_at
        finally:
            await sender.close(graceful=False)

    offered_at, gave_up_at, exchanged_at = run("asyncio", main)
    assert gave_up_at - offered_at >= 1.0 - MARGIN
    assert exchanged_at is None


@requires_host_address
def test_receiver_connect_deadline_runs_from_its_answer(fast_stun_failure: None) -> None:
    """The receiver's clock starts once its answer is sent, after its own gathering
    (here an unanswered STUN server makes that gathering slow)."""

    async def main() -> tuple[float, float, float, float | None]:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((ipv4_host_address(), 0))
        stun_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stun_sink.bind(("127.0.0.1", 0))
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        receiver = PeerLink([f"stun:127.0.0.1:{stun_sink.getsockname()[1]}"])
        room = MemoryRoom()
        try:
            sender.createDataChannel("xfer")
            await sender.setLocalDescription(await sender.createOffer())
            address, port = silent.getsockname()
            offer = {"type": "offer", "sdp": unreachable(sender.localDescription.sdp, address, port)}
            started = time.monotonic()
            with pytest.raises(NoRoute):
                await receiver.answer(cast(RoomChannel, room), offer, timeout=2.0)
            answer_sent_at = room.sent[0][0]
            return started, answer_sent_at, time.monotonic(), receiver.exchanged_at
        finally:
            await receiver.close(graceful=False)
            await sender.close()
            silent.close()
            stun_sink.close()

    started, answer_sent_at, gave_up_at, exchanged_at = run("asyncio", main)
    assert answer_sent_at > started
    assert exchanged_at is not None and exchanged_at >= answer_sent_at
    assert gave_up_at - answer_sent_at >= 2.0 - MARGIN
