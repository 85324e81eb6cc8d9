"""Load on the signaling server: many rooms at once, and clients that flood it.

Everything here talks to a real ``pipeline-signal`` process over real WebSockets
(aiohttp's client, and for the client that stops reading, a raw socket), and
watches that process's memory with psutil.  What it checks is Appendix C's:

- :func:`concurrent_rooms`: N rooms open at once (2N sockets), each relaying a
  realistic exchange (offer/answer of a few KiB, trickled candidates, end of
  candidates) both ways; every message must arrive unchanged and in order, and
  every room must be forgotten once both peers left (the server's own log).
- the floods, each from its own client, while a *witness* keeps opening fresh
  rooms and completing exchanges beside them (:func:`witness`):

  ========== ==============================================================
  signals    one member sends thousands of candidates as fast as it can:
             the peer must get exactly ``max_signals`` (200), the flooder
             ``rate_limited`` and a closed socket
  too large  messages above 64 KiB: ``too_large``, closed
  garbage    frames that are not JSON: ``bad_message``, closed
  guessing   joins to random codes from another address (127.0.0.2): 20
             ``unknown_room`` a minute, then only ``rate_limited``
  idle       hundreds of sockets that connect and never join
  slow read  a receiver that stops reading while its sender pushes 200
             signals of almost 64 KiB: memory must not hold them all
  ========== ==============================================================

The baseline is the witness itself before the floods start: its exchange time
during the floods over its time on a quiet server is the figure, with the server's
resident memory (idle, peak, after) beside it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.cli_harness import Launcher

MAX_MESSAGE = 64 * 1024
MAX_SIGNALS = 200
UNKNOWN_ROOM_LIMIT = 20
GUESS_ADDRESS = "127.0.0.2"  # its own failed-join budget: the witness must not share it
WSCLOSE_POLICY_VIOLATION = 1008  # the server's close for a socket past its join deadline
IDLE_ADDRESS = "127.0.0.3"  # its own unjoined-socket budget, for the same reason
ROOMS_ADDRESS = "127.0.0.4"  # its own open-room budget, for the same reason


@dataclass
class Server:
    url: str
    pid: int
    log: Path  # its stderr, where it logs each room it closes

    def rooms_closed(self) -> int:
        return len(re.findall(r"room #\d+ closed", self.log.read_text(errors="replace")))

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)


@contextlib.contextmanager
def signaling_server(work: Path, join_deadline: float | None = None) -> Iterator[Server]:
    """A standalone ``pipeline-signal --port 0``, stopped (Ctrl-C, then kill) on exit."""
    logs = work / "signal"
    logs.mkdir(parents=True, exist_ok=True)
    argv = ["--port", "0"]
    if join_deadline is not None:
        argv += ["--join-deadline", str(join_deadline)]
    with Launcher(logs) as launcher:
        proc = launcher.start("signal", "pipeline.cli.signal_server", argv, json_out=False)
        url = proc.wait_for_output(r"listening on (ws://\S+)", 30, stream="stdout").group(1)
        yield Server(url, proc.popen.pid, logs / "signal.err")


class MemoryWatch:
    """Samples a process's RSS every ``interval`` seconds; :attr:`peak` since the last reset."""

    def __init__(self, server: Server, interval: float = 0.02) -> None:
        self._server = server
        self._interval = interval
        self.peak = server.rss()
        self._task: asyncio.Task[None] | None = None

    def reset(self) -> int:
        self.peak = self._server.rss()
        return self.peak

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._server.rss())
            await asyncio.sleep(self._interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MemoryWatch]:
        self._task = asyncio.create_task(self._sample())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- messages ---------------------------------------------------------------------


def _sdp(kind: str, size: int, rng: random.Random) -> str:
    """A description-shaped string of about ``size`` bytes (the server only checks the shape)."""
    lines = ["v=0", f"o=- {rng.getrandbits(62)} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    lines += ["a=group:BUNDLE 0", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel"]
    lines += [f"a=setup:{'actpass' if kind == 'offer' else 'active'}", "a=max-message-size:262144"]
    while sum(len(line) + 2 for line in lines) < size:
        lines.append(f"a=fingerprint:sha-256 {rng.getrandbits(256):064X}")
    return "\r\n".join(lines) + "\r\n"


def exchange(
    kind: str, candidates: int, rng: random.Random, sdp_size: int = 3000
) -> list[dict[str, Any]]:
    """What one side signals in a session: its description, candidates, end of candidates."""
    data: list[dict[str, Any]] = [{"type": kind, "sdp": _sdp(kind, sdp_size, rng)}]
    for i in range(candidates):
        address = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        data.append(
            {
                "candidate": f"candidate:{i} 1 udp {2130706431 - i} {address} {rng.randrange(1024, 65535)} typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
            }
        )
    data.append({"candidate": None})
    return data


def _join(code: str, role: str) -> str:
    return json.dumps({"t": "join", "room": code, "role": role})


def _signal(data: dict[str, Any]) -> str:
    return json.dumps({"t": "signal", "data": data})


async def _receive(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any] | None:
    """The next message, or None once the server closed the socket."""
    msg = await ws.receive(timeout)
    if msg.type is aiohttp.WSMsgType.TEXT:
        return dict(json.loads(msg.data))
    return None


async def _expect(ws: aiohttp.ClientWebSocketResponse, t: str, timeout: float) -> dict[str, Any]:
    message = await _receive(ws, timeout)
    if message is None or message.get("t") != t:
        raise AssertionError(f"expected {t!r}, got {message!r}")
    return message


async def _joined(
    session: aiohttp.ClientSession, url: str, code: str, role: str, timeout: float
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=timeout))
    await ws.send_str(_join(code, role))
    await _expect(ws, "joined", timeout)
    return ws


async def _relay_both_ways(
    sender: aiohttp.ClientWebSocketResponse,
    receiver: aiohttp.ClientWebSocketResponse,
    offer: list[dict[str, Any]],
    answer: list[dict[str, Any]],
    timeout: float,
) -> None:
    """Each side sends its part; each must receive the other's, unchanged and in order."""

    async def one_way(
        src: aiohttp.ClientWebSocketResponse,
        dst: aiohttp.ClientWebSocketResponse,
        data: list[dict[str, Any]],
    ) -> None:
        for item in data:
            await src.send_str(_signal(item))
        for i, item in enumerate(data):
            got = await _expect(dst, "signal", timeout)
            if got["data"] != item:
                raise AssertionError(f"signal {i} arrived changed")

    await asyncio.gather(one_way(sender, receiver, offer), one_way(receiver, sender, answer))


async def one_room(
    session: aiohttp.ClientSession,
    url: str,
    code: str,
    candidates: int,
    rng: random.Random,
    timeout: float = 30.0,
) -> float:
    """Join both roles, relay a whole exchange both ways, leave; seconds it took."""
    offer, answer = exchange("offer", candidates, rng), exchange("answer", candidates, rng)
    started = time.perf_counter()
    sender = await _joined(session, url, code, "sender", timeout)
    try:
        receiver = await _joined(session, url, code, "receiver", timeout)
        try:
            await _expect(sender, "peer", timeout)
            await _relay_both_ways(sender, receiver, offer, answer, timeout)
            return time.perf_counter() - started
        finally:
            await receiver.close()
    finally:
        await sender.close()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    return {
        "n": len(seconds),
        "p50_ms": 1000 * statistics.median(seconds) if seconds else float("nan"),
        "p99_ms": 1000 * _percentile(seconds, 0.99),
    }


# -- many rooms at once -------------------------------------------------------------


async def concurrent_rooms(
    server: Server, rooms: int, candidates: int = 8, seed: int = 1
) -> dict[str, Any]:
    """``rooms`` rooms open together: all joined, then all exchanging, then all leaving."""
    rng = random.Random(seed)
    watch = MemoryWatch(server)
    idle = watch.reset()
    closed_before = server.rooms_closed()
    timeout = 60.0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session, watch.running():
        codes = [f"{i}-load-room-{rng.getrandbits(32):08x}" for i in range(rooms)]
        started = time.perf_counter()
        senders = await asyncio.gather(
            *(_joined(session, server.url, c, "sender", timeout) for c in codes)
        )
        receivers = await asyncio.gather(
            *(_joined(session, server.url, c, "receiver", timeout) for c in codes)
        )
        await asyncio.gather(*(_expect(s, "peer", timeout) for s in senders))
        joined_s = time.perf_counter() - started
        open_rooms_rss = server.rss()

        async def relay(i: int) -> float:
            t0 = time.perf_counter()
            offer, answer = exchange("offer", candidates, rng), exchange("answer", candidates, rng)
            await _relay_both_ways(senders[i], receivers[i], offer, answer, timeout)
            return time.perf_counter() - t0

        results = await asyncio.gather(*(relay(i) for i in range(rooms)), return_exceptions=True)
        relay_s = [r for r in results if isinstance(r, float)]
        failures = [repr(r) for r in results if not isinstance(r, float)]
        peak = watch.peak
        await asyncio.gather(*(ws.close() for ws in [*senders, *receivers]))
        total_s = time.perf_counter() - started
    forgotten = await _wait_for(lambda: server.rooms_closed() - closed_before >= rooms, 10.0)
    await asyncio.sleep(0.5)
    return {
        "rooms": rooms,
        "sockets": 2 * rooms,
        "messages_per_room": 2 * (candidates + 2),
        "exchanges_ok": len(relay_s),
        "failures": failures[:5],
        "rooms_forgotten": server.rooms_closed() - closed_before,
        "all_forgotten": forgotten,
        "join_all_s": joined_s,
        "total_s": total_s,
        "relay": latency_summary(relay_s),
        "rss_idle": idle,
        "rss_rooms_open": open_rooms_rss,
        "rss_peak": peak,
        "rss_after": server.rss(),
    }


async def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


# -- the witness --------------------------------------------------------------------


async def witness(url: str, stop: asyncio.Event, seed: int, candidates: int = 4) -> dict[str, Any]:
    """Fresh rooms, one after another, until ``stop``: how long each exchange took, how many failed."""
    rng = random.Random(seed)
    seconds: list[float] = []
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                seconds.append(
                    await one_room(
                        session,
                        url,
                        f"{i}-witness-{rng.getrandbits(32):08x}",
                        candidates,
                        rng,
                        timeout=10.0,
                    )
                )
            except Exception as exc:
                failures.append(repr(exc))
    return {**latency_summary(seconds), "failed": len(failures), "failures": failures[:5]}


# -- floods -------------------------------------------------------------------------


async def _error_then_closed(
    ws: aiohttp.ClientWebSocketResponse, timeout: float
) -> tuple[str | None, bool, int]:
    """Read until the server closes: the error code it sent, whether it closed, signals read."""
    code: str | None = None
    signals = 0
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            message = await _receive(ws, timeout)
            if message is None:
                return code, True, signals
            if message.get("t") == "error":
                code = message.get("code")
            elif message.get("t") == "signal":
                signals += 1
    return code, False, signals


async def signal_flood(url: str, count: int, seed: int) -> dict[str, Any]:
    """A sender floods its room with ``count`` candidates without waiting for anything."""
    rng = random.Random(seed)
    code = f"1-flood-{rng.getrandbits(32):08x}"
    async with aiohttp.ClientSession() as session:
        sender = await _joined(session, url, code, "sender", 10.0)
        receiver = await _joined(session, url, code, "receiver", 10.0)
        await _expect(sender, "peer", 10.0)
        started = time.perf_counter()
        frames = [_signal(item) for item in exchange("offer", count - 2, rng)[1:-1]]
        sent = 0
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            for frame in frames:
                await sender.send_str(frame)
                sent += 1
        error, closed, _ = await _error_then_closed(sender, 10.0)
        # The receiver reads what reached it; once the flooder is gone, `peer left`.
        relayed = 0
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                message = await _receive(receiver, 3.0)
                if message is None or message.get("t") == "peer":
                    break
                relayed += message.get("t") == "signal"
        seconds = time.perf_counter() - started
        await receiver.close()
        await sender.close()
    return {
        "attempted": count,
        "written": sent,
        "relayed": relayed,
        "error": error,
        "closed": closed,
        "seconds": seconds,
    }


async def _one_shot(
    session: aiohttp.ClientSession, url: str, payload: str, join_first: str | None
) -> tuple[str | None, bool]:
    ws = await session.ws_connect(url, max_msg_size=0)
    try:
        if join_first is not None:
            await ws.send_str(_join(join_first, "sender"))
            await _expect(ws, "joined", 10.0)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await ws.send_str(payload)
        error, closed, _ = await _error_then_closed(ws, 10.0)
        return error, closed
    finally:
        await ws.close()


async def refused_flood(
    url: str, clients: int, payload: str, *, joined: bool, seed: int
) -> dict[str, Any]:
    """``clients`` connections each send ``payload`` once (after a join if ``joined``)."""
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    closed = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for i in range(clients):
            code = f"{i}-refused-{rng.getrandbits(32):08x}" if joined else None
            error, was_closed = await _one_shot(session, url, payload, code)
            outcomes[str(error)] = outcomes.get(str(error), 0) + 1
            closed += was_closed
    return {
        "clients": clients,
        "bytes_each": len(payload.encode()),
        "errors": outcomes,
        "closed": closed,
        "seconds": time.perf_counter() - started,
    }


async def guessing(
    url: str, attempts: int, seed: int, local: str = GUESS_ADDRESS
) -> dict[str, Any]:
    """Receiver joins to random codes, a new connection each, from ``local``."""
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    first_rate_limited: int | None = None
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(attempts):
            ws = await session.ws_connect(url)
            await ws.send_str(
                _join(f"{rng.randrange(1000)}-guess-{rng.getrandbits(40):010x}", "receiver")
            )
            error, _, _ = await _error_then_closed(ws, 10.0)
            await ws.close()
            outcomes[str(error)] = outcomes.get(str(error), 0) + 1
            if error == "rate_limited" and first_rate_limited is None:
                first_rate_limited = i + 1
    return {"attempts": attempts, "errors": outcomes, "first_rate_limited_at": first_rate_limited}


async def idle_sockets(
    server: Server, count: int, hold: float, local: str = IDLE_ADDRESS
) -> dict[str, Any]:
    """``count`` sockets from ``local`` that connect and never join.

    Past the server's per-address cap they are refused (``rate_limited``); the
    rest stay open for ``hold`` seconds (RSS per socket then) and are closed by
    the server at its join deadline, which the result times.
    """
    before = server.rss()
    started = time.perf_counter()
    ends: list[tuple[str, float]] = []

    async def one(session: aiohttp.ClientSession) -> None:
        ws = await session.ws_connect(server.url)
        msg = await ws.receive(timeout=hold + 60)
        if msg.type is aiohttp.WSMsgType.TEXT:
            ends.append((str(json.loads(msg.data).get("code")), time.perf_counter() - started))
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            ends.append((f"closed {msg.data}", time.perf_counter() - started))
        await ws.close()

    connector = aiohttp.TCPConnector(limit=0, local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        await asyncio.sleep(hold)
        during = server.rss()
        still_open = count - len(ends)
        await asyncio.gather(*tasks)
    closes = [t for why, t in ends if why == f"closed {WSCLOSE_POLICY_VIOLATION}"]
    outcomes: dict[str, int] = {}
    for why, _ in ends:
        outcomes[why] = outcomes.get(why, 0) + 1
    return {
        "sockets": count,
        "held_s": hold,
        "still_open": still_open,
        "ends": outcomes,
        "refused": outcomes.get("rate_limited", 0),
        "closed_at_deadline": len(closes),
        "last_closed_s": max(closes, default=None),
        "rss_before": before,
        "rss_during": during,
        "bytes_per_socket": (during - before) / max(1, still_open),
    }


async def room_flood(
    server: Server, count: int, seed: int, local: str = ROOMS_ADDRESS
) -> dict[str, Any]:
    """``count`` sender joins to fresh codes from ``local``, each kept open.

    Past the server's per-address room cap they are refused (``rate_limited``);
    once all are closed, the address may open a room again.
    """
    rng = random.Random(seed)

    async def open_room(session: aiohttp.ClientSession) -> tuple[str, aiohttp.ClientWebSocketResponse]:
        """What the server answered a sender join to a fresh code: ``joined``, an error code, or ``closed``."""
        ws = await session.ws_connect(server.url)
        await ws.send_str(_join(f"{rng.randrange(1000)}-room-{rng.getrandbits(40):010x}", "sender"))
        message = await _receive(ws, 10.0)
        return ("closed" if message is None else str(message.get("code") or message.get("t"))), ws

    before = server.rss()
    kept: list[aiohttp.ClientWebSocketResponse] = []
    outcomes: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0, local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            what, ws = await open_room(session)
            outcomes[what] = outcomes.get(what, 0) + 1
            if what == "joined":
                kept.append(ws)
            else:
                await ws.close()
        during = server.rss()
        await asyncio.gather(*(ws.close() for ws in kept))
        # The server frees a room when its handler sees the close, just after.
        reopened = False
        for _ in range(50):
            what, ws = await open_room(session)
            await ws.close()
            reopened = what == "joined"
            if reopened:
                break
            await asyncio.sleep(0.1)
    return {
        "joins": count,
        "outcomes": outcomes,
        "open": len(kept),
        "refused": outcomes.get("rate_limited", 0),
        "reopened_after_close": reopened,
        "rss_before": before,
        "rss_during": during,
        "bytes_per_room": (during - before) / max(1, len(kept)),
    }


def _ws_frame(text: str) -> bytes:
    """One masked client text frame (RFC 6455 5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_ws(url: str) -> socket.socket:
    """A WebSocket opened by hand on a small receive buffer, so that not reading stalls TCP."""
    match = re.match(r"ws://([^/:]+|\[[^\]]+\]):(\d+)(/\S*)", url)
    assert match is not None, url
    host, port, path = match.group(1).strip("[]"), int(match.group(2)), match.group(3)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(response.decode(errors="replace"))
    return sock


async def slow_reader(server: Server, seed: int) -> dict[str, Any]:
    """A receiver that joins, then never reads, while its sender pushes the most it may."""
    rng = random.Random(seed)
    code = f"1-slow-{rng.getrandbits(32):08x}"
    watch = MemoryWatch(server)
    before = watch.reset()
    async with aiohttp.ClientSession() as session, watch.running():
        sender = await _joined(session, server.url, code, "sender", 10.0)
        reader = await asyncio.to_thread(_raw_ws, server.url)
        try:
            reader.sendall(_ws_frame(_join(code, "receiver")))
            await _expect(sender, "peer", 10.0)
            big = _sdp("offer", MAX_MESSAGE - 200, rng)
            started = time.perf_counter()
            sent = 0

            async def push() -> None:
                nonlocal sent
                for _ in range(MAX_SIGNALS):
                    await sender.send_str(_signal({"type": "offer", "sdp": big}))
                    sent += 1

            pushing = asyncio.create_task(push())
            await asyncio.sleep(3.0)  # the server relays what the reader's socket takes, then waits
            peak = watch.peak
            # Leave: the server must drop what it holds for the reader once it is gone.
            reader.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pushing, 10.0)
            pushing.cancel()
            seconds = time.perf_counter() - started
        finally:
            reader.close()
            await sender.close()
    await asyncio.sleep(0.5)
    return {
        "offered_bytes": MAX_SIGNALS * len(big),
        "sent_by_sender": sent,
        "rss_before": before,
        "rss_peak": peak,
        "held_bytes": peak - before,
        "rss_after": server.rss(),
        "seconds": seconds,
    }


# -- the whole run ------------------------------------------------------------------


@dataclass
class LoadPlan:
    rooms: int = 200
    quiet_seconds: float = 4.0
    signal_flood: int = 20_000
    oversize_clients: int = 50
    garbage_clients: int = 200
    guesses: int = 100
    idle_sockets: int = 500
    idle_hold: float = 2.0
    join_deadline: float = 3.0  # the server's, passed to signaling_server by the caller
    max_unjoined: int = 256  # the server's per-address cap (its default)
    room_joins: int = 300
    max_rooms: int = 256  # the server's per-address room cap (its default)
    seed: int = 12
    extra: dict[str, Any] = field(default_factory=dict)


async def run_load(server: Server, plan: LoadPlan) -> dict[str, Any]:
    rooms = await concurrent_rooms(server, plan.rooms, seed=plan.seed)
    # The witness alone first: the baseline for its exchange time under the floods.
    stop = asyncio.Event()
    quiet_task = asyncio.create_task(witness(server.url, stop, plan.seed + 1))
    await asyncio.sleep(plan.quiet_seconds)
    stop.set()
    quiet = await quiet_task

    watch = MemoryWatch(server)
    rss_before_floods = watch.reset()
    stop = asyncio.Event()
    async with watch.running():
        during_task = asyncio.create_task(witness(server.url, stop, plan.seed + 2))
        # Refusals at once; then the two that are about memory one by one, so
        # that each one's RSS growth is its own.
        refusals = await asyncio.gather(
            signal_flood(server.url, plan.signal_flood, plan.seed + 3),
            refused_flood(
                server.url,
                plan.oversize_clients,
                "x" * (MAX_MESSAGE + 1),
                joined=True,
                seed=plan.seed + 4,
            ),
            refused_flood(
                server.url, plan.garbage_clients, "{not json", joined=False, seed=plan.seed + 5
            ),
            guessing(server.url, plan.guesses, plan.seed + 6),
        )
        idle = await idle_sockets(server, plan.idle_sockets, plan.idle_hold)
        opened = await room_flood(server, plan.room_joins, plan.seed + 8)
        slow = await slow_reader(server, plan.seed + 7)
        floods = [*refusals, idle, opened, slow]
        stop.set()
        during = await during_task
        flood_peak = watch.peak
    names = ("signals", "too_large", "garbage", "guessing", "idle", "rooms", "slow_reader")
    healthy = await _healthz(server.url)
    return {
        "rooms": rooms,
        "witness_quiet": quiet,
        "witness_flood": during,
        "floods": dict(zip(names, floods, strict=True)),
        "rss_before_floods": rss_before_floods,
        "rss_flood_peak": flood_peak,
        "rss_end": server.rss(),
        "healthz_after": healthy,
    }


async def _healthz(url: str) -> bool:
    http = url.replace("ws://", "http://", 1).removesuffix("/ws") + "/healthz"
    async with aiohttp.ClientSession() as session, session.get(http) as response:
        return response.status == 200 and (await response.text()) == "ok"


def verdicts(result: dict[str, Any], plan: LoadPlan) -> dict[str, bool]:
    """What Appendix C requires of each part, true when it held."""
    rooms, floods = result["rooms"], result["floods"]
    guess = floods["guessing"]
    return {
        "every room relayed unchanged": rooms["exchanges_ok"] == plan.rooms,
        "every room forgotten": rooms["all_forgotten"],
        "signal cap 200 then rate_limited": floods["signals"]["relayed"] == MAX_SIGNALS
        and floods["signals"]["error"] == "rate_limited"
        and floods["signals"]["closed"],
        "too_large refused and closed": floods["too_large"]["errors"]
        == {"too_large": plan.oversize_clients}
        and floods["too_large"]["closed"] == plan.oversize_clients,
        "garbage refused and closed": floods["garbage"]["errors"]
        == {"bad_message": plan.garbage_clients}
        and floods["garbage"]["closed"] == plan.garbage_clients,
        "20 guesses a minute, then rate_limited": guess["errors"].get("unknown_room")
        == UNKNOWN_ROOM_LIMIT
        and guess["errors"].get("rate_limited") == plan.guesses - UNKNOWN_ROOM_LIMIT,
        "other rooms unaffected (witness: no failure)": result["witness_quiet"]["failed"] == 0
        and result["witness_flood"]["failed"] == 0
        and result["witness_flood"]["n"] > 0,
        "idle sockets capped per address, closed at the join deadline": idle_held(
            floods["idle"], plan
        ),
        "rooms capped per address, freed when closed": rooms_held(floods["rooms"], plan),
        "healthy after": result["healthz_after"],
    }


def rooms_held(opened: dict[str, Any], plan: LoadPlan) -> bool:
    kept = min(plan.room_joins, plan.max_rooms)
    return (
        opened["open"] == kept
        and opened["refused"] == plan.room_joins - kept
        and opened["reopened_after_close"] is True
    )


def idle_held(idle: dict[str, Any], plan: LoadPlan) -> bool:
    kept = min(plan.idle_sockets, plan.max_unjoined)
    last = idle["last_closed_s"]
    return (
        idle["still_open"] == kept
        and idle["refused"] == plan.idle_sockets - kept
        and idle["closed_at_deadline"] == kept
        and last is not None
        and plan.join_deadline <= last + 0.5  # connect time blurs the start a little
    )
