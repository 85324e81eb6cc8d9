"""Two real aiortc SCTP associations over an in-process lossy, delayed link.

Everything above the DTLS layer is aiortc's own code (``RTCSctpTransport`` and
``RTCDataChannel``); only the DTLS transport is replaced by :class:`_Pipe`, which
delivers each SCTP packet after ``delay`` seconds (one way) unless a seeded random
draw drops it with probability ``loss``. No encryption, no ICE: the tests that use
it are about SCTP's loss recovery and congestion control, which sit above both.
Both directions share one event loop; the CPU cost of both peers lands on one core,
so rates here are far below the lab's and only compared within one test.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel
from aiortc.rtcdatachannel import RTCDataChannelParameters
from aiortc.rtcsctptransport import DataChunk, RTCSctpTransport, parse_packet

MiB = 1024 * 1024


@dataclass
class LinkConditions:
    delay: float = 0.0  # seconds, one way
    loss: float = 0.0  # per packet, each direction
    down: bool = False  # a cut: every packet dropped


class _Ice:
    def __init__(self, role: str) -> None:
        self.role = "controlling" if role == "client" else "controlled"


class _Pipe:
    """The DTLS transport one RTCSctpTransport sees."""

    def __init__(self, role: str, link: Link) -> None:
        self._role = role
        self.state = "connected"
        self.transport = _Ice(role)
        self._link = link
        self._receiver: Any = None
        self.peer: _Pipe | None = None

    def _register_data_receiver(self, receiver: Any) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        self._link.deliver(self, data)


@dataclass
class Link:
    conditions: LinkConditions = field(default_factory=LinkConditions)
    seed: int = 1
    sent: int = 0
    dropped: int = 0
    data_sent: int = 0  # DATA chunks client -> server, retransmissions included
    data_dropped: int = 0
    data_tsns: set[int] = field(default_factory=set)  # distinct TSNs client -> server
    t3_resends: int = 0  # chunks a T3 timeout marked for retransmission (set by a test)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self.client = _Pipe("client", self)
        self.server = _Pipe("server", self)
        self.client.peer, self.server.peer = self.server, self.client

    def deliver(self, source: _Pipe, data: bytes) -> None:
        self.sent += 1
        c = self.conditions
        tsns = [x.tsn for x in parse_packet(data)[3] if isinstance(x, DataChunk)] if source is self.client else []
        self.data_sent += len(tsns)
        self.data_tsns.update(tsns)
        if c.down or (c.loss and self._random.random() < c.loss):
            self.dropped += 1
            self.data_dropped += len(tsns)
            return
        target = source.peer
        assert target is not None
        loop = asyncio.get_running_loop()

        def arrive() -> None:
            if target._receiver is not None:
                task = loop.create_task(target._receiver._handle_data(data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        if c.delay > 0:
            loop.call_later(c.delay, arrive)
        else:
            loop.call_soon(arrive)


    @property
    def retransmissions(self) -> int:
        return self.data_sent - len(self.data_tsns)


@dataclass
class Transfer:
    seconds: float
    received: int
    data: bytes


async def associate(link: Link) -> tuple[RTCSctpTransport, RTCSctpTransport]:
    """Two established associations over ``link`` (client, server)."""
    client = RTCSctpTransport(link.client)  # type: ignore[arg-type]
    server = RTCSctpTransport(link.server)  # type: ignore[arg-type]
    await server.start(client.getCapabilities(), client.port)
    await client.start(server.getCapabilities(), server.port)
    for _ in range(2000):
        if client._association_state == client.State.ESTABLISHED and server._association_state == server.State.ESTABLISHED:
            return client, server
        await asyncio.sleep(0.005)
    raise TimeoutError("association did not come up")


async def transfer(
    client: RTCSctpTransport,
    server: RTCSctpTransport,
    total: int,
    *,
    message: int = 64 * 1024,
    timeout: float = 60.0,
    on_progress: Any = None,
) -> Transfer:
    """Send ``total`` bytes of a known pattern client → server over one channel,
    with the pipeline's bufferedAmount rule; return what arrived and how long it took."""
    chunks: list[bytes] = []
    got = 0
    done = asyncio.Event()

    @server.on("datachannel")
    def on_channel(channel: RTCDataChannel) -> None:
        @channel.on("message")
        def on_message(data: bytes) -> None:
            nonlocal got
            chunks.append(data)
            got += len(data)
            if on_progress is not None:
                on_progress(got)
            if got >= total:
                done.set()

    channel = RTCDataChannel(client, RTCDataChannelParameters(label="xfer"))
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await asyncio.wait_for(opened.wait(), 30)
    low = asyncio.Event()
    channel.bufferedAmountLowThreshold = 256 * 1024
    channel.on("bufferedamountlow", low.set)
    pattern = random.Random(7).randbytes(total)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for pos in range(0, total, message):
        while channel.bufferedAmount > 1 * MiB:
            low.clear()
            await asyncio.wait_for(low.wait(), timeout)
        channel.send(pattern[pos : pos + message])
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), timeout)
    seconds = loop.time() - start
    return Transfer(seconds, got, pattern if b"".join(chunks) == pattern else b"")


async def close(*transports: RTCSctpTransport) -> None:
    for t in transports:
        await t.stop()
