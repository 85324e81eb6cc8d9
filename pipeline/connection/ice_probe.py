"""The one adapter over aiortc/aioice internals: what ICE gathered, tried and chose.

``getStats()`` is empty for a data-only connection in aiortc 1.16, so candidate
and pair details are read from private objects.  Everything that touches them
lives here; ``tests/unit/test_ice_probe.py`` fails loudly (see
:func:`internals_problems`) when the pinned versions change shape::

    RTCPeerConnection.sctp                  RTCSctpTransport (None before
      .transport                            RTCDtlsTransport  createDataChannel /
        .transport                          RTCIceTransport   setRemoteDescription)
          ._connection                      aioice.Connection
            .local_candidates / .remote_candidates     Candidate(type, host, port)
            .stun_server                               (host, port) or None
            ._protocols                                StunProtocol, one per host socket
            ._check_list                               CandidatePair(state, nominated)
            ._nominated                                {component: CandidatePair}

Every probe must run before ``pc.close()``: closing clears the candidates,
protocols and the nominated pair.  After an ICE failure (state ``failed``)
they are all still there.

Signals aioice does not record, and how we get them:

* *A check from the peer arrived.*  aioice answers incoming Binding requests
  in ``Connection.request_received`` and keeps no trace, except that a check
  from an unknown address creates a ``prflx`` remote candidate and a
  ``USE-CANDIDATE`` check sets ``remote_nominated`` on the controlled side.
  :func:`watch` wraps ``request_received`` on the instance and counts
  authenticated checks (USERNAME starting with our ufrag, valid
  MESSAGE-INTEGRITY); without :func:`watch` only the two passive signals above
  are used, which miss checks arriving from an address already signalled.
* *Round-trip time.*  aioice records none.  :func:`measure_rtt` times one
  Binding request on the selected pair (a consent check, RFC 7675).  Without
  it, :func:`watch` times the winning connectivity check (``check_state``
  IN_PROGRESS -> SUCCEEDED), kept only when shorter than the first
  retransmission timeout (``aioice.stun.RETRY_RTO``, 0.5 s), as a retransmitted
  check does not measure the path.  Otherwise ``rtt_ms`` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Final, TypedDict

from aioice import stun
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCPeerConnection

from pipeline.connection.diagnostics import Observation

SUPPORTED_VERSIONS: Final = {"aiortc": "1.16.", "aioice": "0.13."}
CANDIDATE_TYPES: Final = ("host", "srflx", "prflx", "relay")
DEFAULT_RECEIVE_BUFFER: Final = 4 * 1024 * 1024
# SO_RCVBUFFORCE ignores net.core.rmem_max; Linux only, needs CAP_NET_ADMIN.
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)

# Addresses nobody outside the local network can reach.  Documentation ranges
# (192.0.2/24, 198.51.100/24, 203.0.113/24) are deliberately absent: the
# network lab uses them as its "public" Internet.
_PRIVATE_NETWORKS: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "0.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


class CandidateInfo(TypedDict):
    type: str
    address: str
    port: int
    protocol: str


class SelectedPair(TypedDict):
    local: CandidateInfo
    remote: CandidateInfo
    rtt_ms: float | None


class PairState(TypedDict):
    local: CandidateInfo
    remote: CandidateInfo
    state: str
    nominated: bool
    remote_nominated: bool


@dataclass
class _Watch:
    """What :func:`watch` records for one aioice Connection."""

    incoming_checks: int = 0
    incoming_sources: set[tuple[str, int]] = field(default_factory=set)
    our_checks_answered: bool = False
    check_started: weakref.WeakKeyDictionary[CandidatePair, float] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    check_seconds: weakref.WeakKeyDictionary[CandidatePair, float] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    rtt_samples: list[float] = field(default_factory=list)


_WATCHES: weakref.WeakKeyDictionary[Connection, _Watch] = weakref.WeakKeyDictionary()
_MISSING: Final = object()


# -- the internal chain ----------------------------------------------------------


def ice_connection(pc: RTCPeerConnection) -> Connection | None:
    """The aioice Connection under ``pc``, or None before it exists."""
    sctp = pc.sctp
    if sctp is None:
        return None
    connection = sctp.transport.transport._connection
    return connection if isinstance(connection, Connection) else None


def internals_problems(pc: RTCPeerConnection | None = None) -> list[str]:
    """Everything this module relies on that the installed versions lack.

    Empty when all is well.  With ``pc`` (one with a DataChannel or a remote
    description) the instance chain is walked too.
    """
    problems: list[str] = []
    for package, prefix in SUPPORTED_VERSIONS.items():
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            continue
        if not version.startswith(prefix):
            problems.append(f"{package} {version} installed, ice_probe was written for {prefix}x")
    for cls, names in (
        (
            Connection,
            (
                "request_received",
                "check_state",
                "build_request",
                "local_candidates",
                "remote_candidates",
                "local_username",
                "local_password",
            ),
        ),
        (CandidatePair, ("local_candidate", "remote_addr", "component")),
        (StunProtocol, ("request", "datagram_received")),
        (stun.Message, ("check_message_integrity",)),
    ):
        problems.extend(
            f"{cls.__module__}.{cls.__qualname__}.{name} is missing"
            for name in names
            if not hasattr(cls, name)
        )
    states = {s.name for s in CandidatePair.State}
    if not {"FROZEN", "WAITING", "IN_PROGRESS", "SUCCEEDED", "FAILED"} <= states:
        problems.append(f"aioice CandidatePair.State changed: {sorted(states)}")
    for name in ("RETRY_MAX", "RETRY_RTO"):
        if not hasattr(stun, name):
            problems.append(f"aioice.stun.{name} is missing")
    if pc is not None:
        problems.extend(_instance_problems(pc))
    return problems


def _instance_problems(pc: RTCPeerConnection) -> list[str]:
    chain = ("sctp", "transport", "transport", "_connection")
    obj: object = pc
    walked = "pc"
    for name in chain:
        if not hasattr(obj, name):
            return [f"{walked}.{name} is missing (on {type(obj).__name__})"]
        obj = getattr(obj, name)
        walked += f".{name}"
        if obj is None:
            return [f"{walked} is None: create a DataChannel or set a remote description first"]
    if not isinstance(obj, Connection):
        return [f"{walked} is a {type(obj).__name__}, not aioice.Connection"]
    expected: tuple[tuple[str, type | tuple[type, ...]], ...] = (
        ("_check_list", list),
        ("_nominated", dict),
        ("_protocols", list),
        ("_local_candidates", list),
        ("_remote_candidates", list),
        ("stun_server", (tuple, type(None))),
        ("remote_password", (str, type(None))),
    )
    return [
        f"aioice.Connection.{name} is missing or not a {kind}"
        for name, kind in expected
        if not isinstance(getattr(obj, name, _MISSING), kind)
    ]


def assert_internals(pc: RTCPeerConnection | None = None) -> None:
    """Raise RuntimeError naming what changed, for a loud start-up failure."""
    problems = internals_problems(pc)
    if problems:
        raise RuntimeError(
            "aiortc/aioice internals changed; update pipeline/connection/ice_probe.py "
            "(written for aiortc 1.16, aioice 0.13):\n  " + "\n  ".join(problems)
        )


# -- candidates ------------------------------------------------------------------


def _ordered_types(types: set[str]) -> list[str]:
    known = [t for t in CANDIDATE_TYPES if t in types]
    return known + sorted(types - set(CANDIDATE_TYPES))


def _info(candidate: Candidate) -> CandidateInfo:
    return {
        "type": candidate.type,
        "address": candidate.host,
        "port": candidate.port,
        "protocol": candidate.transport.lower(),
    }


def local_candidate_types(pc: RTCPeerConnection) -> list[str]:
    """Distinct local candidate types, in the order host, srflx, prflx, relay."""
    connection = ice_connection(pc)
    if connection is None:
        return []
    return _ordered_types({c.type for c in connection.local_candidates})


def remote_candidate_types(pc: RTCPeerConnection) -> list[str]:
    """Distinct remote types, including ``prflx`` learned from the peer's checks."""
    connection = ice_connection(pc)
    if connection is None:
        return []
    return _ordered_types({c.type for c in connection.remote_candidates})


def sdp_candidate_types(sdp: str) -> list[str]:
    """Distinct candidate types in SDP text (``a=candidate:... typ TYPE``)."""
    types: set[str] = set()
    for line in sdp.splitlines():
        line = line.strip()
        if not line.startswith(("a=candidate:", "candidate:")):
            continue
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word == "typ":
                types.add(words[i + 1])
                break
    return _ordered_types(types)


def is_private_address(host: str) -> bool:
    """True for addresses only the local network can reach (and mDNS names)."""
    if host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE_NETWORKS)


def remote_addresses_private_only(pc: RTCPeerConnection) -> bool:
    """Whether every address the peer *offered* is private (vacuously true if none).

    Peer-reflexive candidates are ignored: they were learned from checks, not offered.
    """
    connection = ice_connection(pc)
    if connection is None:
        return True
    return all(
        is_private_address(c.host) for c in connection.remote_candidates if c.type != "prflx"
    )


def stun_answered(pc: RTCPeerConnection) -> bool | None:
    """None without a STUN server; else whether gathering got a srflx candidate."""
    connection = ice_connection(pc)
    if connection is None or connection.stun_server is None:
        return None
    return any(c.type == "srflx" for c in connection.local_candidates)


# -- pairs -------------------------------------------------------------------------


def _watch_of(connection: Connection) -> _Watch | None:
    return _WATCHES.get(connection)


def selected_pair(pc: RTCPeerConnection) -> SelectedPair | None:
    """The nominated pair of component 1 with its RTT (see module docstring)."""
    connection = ice_connection(pc)
    if connection is None:
        return None
    pair = connection._nominated.get(1)
    if pair is None:
        return None
    rtt: float | None = None
    record = _watch_of(connection)
    if record is not None:
        # Active samples measure the path; a fast first check is the fallback.
        rtt = min(record.rtt_samples) if record.rtt_samples else record.check_seconds.get(pair)
    return {
        "local": _info(pair.local_candidate),
        "remote": _info(pair.remote_candidate),
        "rtt_ms": None if rtt is None else round(rtt * 1000.0, 3),
    }


def pair_states(pc: RTCPeerConnection) -> list[PairState]:
    """Every pair in the check list, highest priority first.

    aioice drops pairs that were never checked once a pair is nominated.
    """
    connection = ice_connection(pc)
    if connection is None:
        return []
    return [
        {
            "local": _info(pair.local_candidate),
            "remote": _info(pair.remote_candidate),
            "state": pair.state.name.lower(),
            "nominated": pair.nominated,
            "remote_nominated": pair.remote_nominated,
        }
        for pair in connection._check_list
    ]


def checks_received_from_peer(pc: RTCPeerConnection) -> bool:
    """Whether any connectivity check from the peer reached us.

    Counted exactly once :func:`watch` is installed; otherwise inferred from a
    ``prflx`` remote candidate or a pair the peer nominated, which misses checks
    that came from an address the peer had signalled.
    """
    connection = ice_connection(pc)
    if connection is None:
        return False
    record = _watch_of(connection)
    if record is not None and record.incoming_checks:
        return True
    return any(c.type == "prflx" for c in connection.remote_candidates) or any(
        pair.remote_nominated for pair in connection._check_list
    )


def our_checks_answered(pc: RTCPeerConnection) -> bool:
    """Whether the peer ever answered one of our checks (a pair succeeded)."""
    connection = ice_connection(pc)
    if connection is None:
        return False
    record = _watch_of(connection)
    if record is not None and record.our_checks_answered:
        return True
    return bool(connection._nominated) or any(
        pair.state == CandidatePair.State.SUCCEEDED for pair in connection._check_list
    )


def observe(pc: RTCPeerConnection, local_symmetric_nat: bool | None = None) -> Observation:
    """Everything :func:`diagnostics.explain_no_route` needs, read from ``pc``."""
    connection = ice_connection(pc)
    return Observation(
        stun_configured=connection is not None and connection.stun_server is not None,
        stun_answered=stun_answered(pc),
        local_types=local_candidate_types(pc),
        remote_types=remote_candidate_types(pc),
        remote_addresses_private_only=remote_addresses_private_only(pc),
        checks_from_peer=checks_received_from_peer(pc),
        our_checks_answered=our_checks_answered(pc),
        local_symmetric_nat=local_symmetric_nat,
    )


# -- instrumentation ---------------------------------------------------------------


def watch(pc: RTCPeerConnection) -> bool:
    """Record incoming checks and check timings on ``pc``'s ICE connection.

    Call it as soon as the connection exists and before ICE starts: after
    ``createDataChannel`` on the offering side, after ``setRemoteDescription``
    on the answering side.  Idempotent; False when there is no connection yet.
    """
    connection = ice_connection(pc)
    if connection is None:
        return False
    if connection in _WATCHES:
        return True
    record = _Watch()
    _WATCHES[connection] = record
    # Wrapping bound methods on the instance: aioice calls them as
    # self.request_received / self.check_state, so the instance attribute wins.
    # (connection -> wrapper -> bound method -> connection is a cycle the
    # garbage collector reclaims with the connection.)
    original_request_received = connection.request_received
    original_check_state = connection.check_state

    def request_received(
        message: stun.Message, addr: tuple[str, int], protocol: StunProtocol
    ) -> None:
        if _is_peer_check(connection, message):
            record.incoming_checks += 1
            record.incoming_sources.add((addr[0], addr[1]))
        original_request_received(message, addr, protocol)

    def check_state(pair: CandidatePair, state: CandidatePair.State) -> None:
        now = time.monotonic()
        if state == CandidatePair.State.IN_PROGRESS:
            record.check_started[pair] = now
        elif state == CandidatePair.State.SUCCEEDED:
            record.our_checks_answered = True
            started = record.check_started.pop(pair, None)
            if started is not None and now - started < stun.RETRY_RTO:
                record.check_seconds[pair] = now - started
        original_check_state(pair, state)

    connection.request_received = request_received  # type: ignore[method-assign]
    connection.check_state = check_state  # type: ignore[method-assign]
    return True


def _is_peer_check(connection: Connection, message: stun.Message) -> bool:
    if message.message_method != stun.Method.BINDING:
        return False
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str) or "MESSAGE-INTEGRITY" not in message.attributes:
        return False
    if username.partition(":")[0] != connection.local_username:
        return False
    return message.check_message_integrity(connection.local_password.encode("utf8"))


def incoming_check_sources(pc: RTCPeerConnection) -> list[tuple[str, int]]:
    """Source addresses of the peer's checks seen since :func:`watch`."""
    connection = ice_connection(pc)
    record = None if connection is None else _watch_of(connection)
    return sorted(record.incoming_sources) if record is not None else []


async def measure_rtt(pc: RTCPeerConnection, timeout: float = 1.0) -> float | None:
    """Time one Binding request on the selected pair; milliseconds or None.

    Sent like a consent check (no retransmission).  The sample is kept, and
    :func:`selected_pair` reports the smallest one seen.
    """
    connection = ice_connection(pc)
    if connection is None or connection.remote_password is None:
        return None
    pair = connection._nominated.get(1)
    if pair is None:
        return None
    request = connection.build_request(pair, nominate=False)
    started = time.monotonic()
    try:
        await asyncio.wait_for(
            pair.protocol.request(
                request,
                pair.remote_addr,
                integrity_key=connection.remote_password.encode("utf8"),
                retransmissions=0,
            ),
            timeout,
        )
    except (TimeoutError, stun.TransactionError, ConnectionError, OSError):
        return None
    seconds = time.monotonic() - started
    record = _WATCHES.setdefault(connection, _Watch())
    record.rtt_samples.append(seconds)
    return round(seconds * 1000.0, 3)


# -- sockets ---------------------------------------------------------------------


def set_receive_buffer(pc: RTCPeerConnection, size: int = DEFAULT_RECEIVE_BUFFER) -> int:
    """Raise SO_RCVBUF on every ICE UDP socket; returns how many were set.

    aioice asks for 256 KiB, which ``net.core.rmem_max`` may cap; under load the
    receiver then drops datagrams.  SO_RCVBUFFORCE (root / CAP_NET_ADMIN)
    bypasses the cap; otherwise SO_RCVBUF is capped by the kernel.  Call it
    after gathering (``setLocalDescription``): the sockets exist only then.
    """
    connection = ice_connection(pc)
    if connection is None:
        return 0
    count = 0
    for protocol in connection._protocols:
        transport = getattr(protocol, "transport", None)
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            except OSError:
                continue
        count += 1
    return count


def receive_buffer_sizes(pc: RTCPeerConnection) -> list[int]:
    """SO_RCVBUF as the kernel reports it (twice the requested size on Linux)."""
    connection = ice_connection(pc)
    if connection is None:
        return []
    sizes: list[int] = []
    for protocol in connection._protocols:
        transport = getattr(protocol, "transport", None)
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is not None:
            sizes.append(int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)))
    return sizes


# -- NAT mapping behaviour -----------------------------------------------------------


@dataclass(frozen=True)
class NatMapping:
    """Public address each STUN server saw for one local UDP socket."""

    mapped: dict[str, tuple[str, int] | None]

    @property
    def symmetric(self) -> bool | None:
        """True when servers saw different public ports/addresses (a symmetric NAT);
        None with fewer than two answers."""
        answers = {a for a in self.mapped.values() if a is not None}
        if sum(a is not None for a in self.mapped.values()) < 2:
            return None
        return len(answers) > 1

    def to_dict(self) -> dict[str, object]:
        return {
            "mapped": {k: (list(v) if v else None) for k, v in self.mapped.items()},
            "symmetric": self.symmetric,
        }


class _MappingProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: dict[bytes, tuple[str, int]] = {}
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
        if message.message_class == stun.Class.RESPONSE and mapped is not None:
            self.answers[message.transaction_id] = (str(mapped[0]), int(mapped[1]))
            self.event.set()


async def probe_nat_mapping(
    servers: Sequence[tuple[str, int]], timeout: float = 2.0, local_host: str = "0.0.0.0"
) -> NatMapping:
    """Ask each STUN server (distinct IPs) for our mapped address from ONE socket.

    Different answers mean the NAT maps per destination (symmetric): the peer's
    checks then come from a port nobody signalled.  Requests are resent every
    0.25 s until every server answered or ``timeout`` passed.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _MappingProtocol, local_addr=(local_host, 0), family=socket.AF_INET
    )
    requests = {
        f"{host}:{port}": stun.Message(
            message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST
        )
        for host, port in servers
    }
    targets = dict(zip(requests, servers, strict=True))
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline:
            pending = [k for k, m in requests.items() if m.transaction_id not in protocol.answers]
            if not pending:
                break
            for key in pending:
                transport.sendto(bytes(requests[key]), targets[key])
            protocol.event.clear()
            remaining = max(0.0, min(0.25, deadline - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.event.wait(), remaining)
    finally:
        transport.close()
    return NatMapping(
        mapped={k: protocol.answers.get(m.transaction_id) for k, m in requests.items()}
    )


def remote_max_message_size(pc: RTCPeerConnection, default: int = 65536) -> int:
    """The peer's SDP ``a=max-message-size`` (RFC 8841 default 65536 when absent).

    aiortc keeps it on the SCTP transport; 0 there means "no limit".
    """
    sctp = pc.sctp
    value = getattr(sctp, "_remote_max_message_size", None) if sctp is not None else None
    if not isinstance(value, int):
        return default
    return value if value > 0 else 2**31
