"""Establishing one direct peer connection through the signaling room.

``PeerLink`` owns one ``RTCPeerConnection`` and its ``xfer`` DataChannel.  A
reconnect (Appendix A.1, C.5) builds a new ``PeerLink`` through the same
``RoomChannel``.  ICE is STUN-only: the configuration never holds a TURN
server, so no server can ever carry file bytes.

The offerer is always the sender (B.1).  Descriptions are exchanged whole
(aiortc gathers before ``setLocalDescription`` returns, so its SDP carries every
candidate and ``a=end-of-candidates``); trickled candidates from a browser peer
are accepted too.  A browser's mDNS host candidates (``<uuid>.local``) are
dropped before aiortc sees them: aioice cannot resolve them here and waits 1 s
per name, while the browser's own checks reach us anyway and aiortc learns the
address as peer-reflexive (../shared/notes/browser.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from pipeline.config import stun_address
from pipeline.connection import ice_probe
from pipeline.connection.diagnostics import Diagnosis, explain_no_route
from pipeline.signaling import Peer, Signal
from pipeline.signaling.client import SignalingClient, SignalingError

log = logging.getLogger(__name__)

LABEL = "xfer"
SUBPROTOCOL = "xfer/1"
LOCAL_MAX_MESSAGE_SIZE = 262144  # what aiortc 1.16 advertises
NAT_PROBE_TIMEOUT = 2.0  # s for the STUN servers to answer the mapping probe


class NoRoute(Exception):
    """ICE found no direct path before the deadline (A.1 ``no_route``)."""

    def __init__(self, diagnosis: Diagnosis, observation: dict[str, object]) -> None:
        super().__init__(diagnosis.summary)
        self.diagnosis = diagnosis
        self.observation = observation


class Superseded(Exception):
    """Start the attempt over: a new offer arrived while answering an older one
    (answer the new one), or the receiver rejoined the room (offer again)."""

    def __init__(self, offer: dict[str, Any]) -> None:
        super().__init__("superseded by a new offer")
        self.offer = offer


class RoomChannel:
    """The signaling socket, read by one task into a queue; tracks the peer's presence.

    ``on_peer_left`` runs when the server reports that the peer left the room."""

    def __init__(self, client: SignalingClient, on_peer_left: Callable[[], None] | None = None) -> None:
        self.client = client
        self.on_peer_left = on_peer_left
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.peer_present = asyncio.Event()
        self.closed: SignalingError | None = None
        self.bytes_sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self, peer_present: bool) -> None:
        if peer_present:
            self.peer_present.set()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = await self.client.receive()
                if isinstance(message, Peer):
                    if message.event == "joined":
                        self.peer_present.set()
                        # Whatever we signalled while it was away was dropped (C.5).
                        self.signals.put_nowait({"type": "peer_joined"})
                    else:
                        self.peer_present.clear()
                        if self.on_peer_left is not None:
                            self.on_peer_left()
                elif isinstance(message, Signal):
                    self.signals.put_nowait(message.data)
        except SignalingError as exc:
            self.closed = exc
            self.signals.put_nowait({"type": "closed"})

    async def send(self, data: dict[str, Any]) -> None:
        await self.client.send_signal(data)

    def drain(self) -> None:
        """Forget signals left over from an earlier peer connection."""
        while not self.signals.empty():
            self.signals.get_nowait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()


class PeerLink:
    """One RTCPeerConnection plus its DataChannel, from offer to close."""

    def __init__(self, stun_servers: list[str]) -> None:
        servers = [RTCIceServer(urls=url) for url in stun_servers]
        # iceServers=[] means host candidates only; None would mean Google's STUN server.
        self.configuration = RTCConfiguration(iceServers=servers)
        self.pc = RTCPeerConnection(self.configuration)
        self.stun_configured = bool(stun_servers)
        self.channel: RTCDataChannel | None = None
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.connected_at: float | None = None
        # When both descriptions were in place (the answer sent or applied): the connect deadline's start.
        self.exchanged_at: float | None = None
        self.answering = False
        # With two STUN servers, how this side's NAT maps: measured beside ICE (aiortc
        # itself asks only the first server), for the summary and the no-route diagnosis.
        self.stun_servers = list(stun_servers)
        self._nat_probe: asyncio.Task[ice_probe.NatMapping | None] | None = None

    # -- establishing ------------------------------------------------------------

    async def offer(
        self,
        room: RoomChannel,
        *,
        ordered: bool,
        max_retransmits: int | None,
        max_packet_life_time: int | None,
        timeout: float,
    ) -> None:
        """Sender side: create the channel, offer, take the answer, wait for open
        (at most ``timeout`` for the answer, then ``timeout`` from its arrival)."""
        channel = self.pc.createDataChannel(
            LABEL,
            ordered=ordered,
            maxRetransmits=max_retransmits,
            maxPacketLifeTime=max_packet_life_time,
            protocol=SUBPROTOCOL,
        )
        self._adopt(channel)
        ice_probe.watch(self.pc)
        self._start_nat_probe()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        ice_probe.set_receive_buffer(self.pc)
        await room.send({"type": "offer", "sdp": self.pc.localDescription.sdp})
        await self._exchange(room, want="answer", timeout=timeout)

    async def answer(self, room: RoomChannel, offer: dict[str, Any], *, timeout: float) -> None:
        """Receiver side: take the offer, answer, wait for the sender's channel
        (``timeout`` from the answer sent)."""
        self.answering = True

        @self.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self._adopt(channel)

        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=without_mdns_candidates(offer["sdp"]), type="offer")
        )
        ice_probe.watch(self.pc)
        self._start_nat_probe()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        ice_probe.set_receive_buffer(self.pc)
        await room.send({"type": "answer", "sdp": self.pc.localDescription.sdp})
        await self._exchange(room, want=None, timeout=timeout)

    async def _exchange(self, room: RoomChannel, *, want: str | None, timeout: float) -> None:
        """Apply signals until the channel opens.

        The connect deadline (A.1, ``timeout``) runs from the descriptions' exchange:
        for the answerer (``want=None``) from here, its answer sent; for the offerer
        from the moment the answer is applied, so the receiver's candidate gathering
        (5 s when STUN is unreachable) does not eat into it.  The wait for the answer
        is bounded too, by the same ``timeout`` counted from the offer: a receiver
        that never answers ends in ``no_route`` after at most ``timeout``, and the
        offerer's worst case is twice ``timeout`` from its offer (a reconnect
        attempt is also bounded by the reconnect deadline, see ``_establish``).
        """
        now = time.monotonic()
        if want is None:
            self.exchanged_at = now
        # The answerer's connect deadline, or the offerer's bound on the wait for the answer.
        deadline = now + timeout
        while not self.opened.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._no_route()
            getter = asyncio.ensure_future(room.signals.get())
            opened = asyncio.ensure_future(self.opened.wait())
            done, _ = await asyncio.wait({getter, opened}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            opened.cancel()
            if getter not in done:
                getter.cancel()
                continue
            data = getter.result()
            if data.get("type") == "closed":
                raise SignalingError("closed", "signaling connection lost while connecting")
            if data.get("type") == "offer" and self.answering:
                raise Superseded(data)  # the sender gave up on this attempt and started over
            if data.get("type") == "peer_joined" and not self.answering:
                raise Superseded(data)  # the receiver came back: offer again
            if want is not None and data.get("type") == want:
                sdp = without_mdns_candidates(data["sdp"])
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=want))
                want = None
                self.exchanged_at = time.monotonic()
                deadline = self.exchanged_at + timeout  # descriptions exchanged: the connect deadline starts
            elif "candidate" in data:
                await self._add_candidate(data)
        self.connected_at = time.monotonic()

    async def _add_candidate(self, data: dict[str, Any]) -> None:
        line = data.get("candidate")
        if not line:
            await self.pc.addIceCandidate(None)  # end of candidates: lets ICE fail on time
            return
        candidate = candidate_from_sdp(str(line).removeprefix("candidate:"))
        if is_mdns_host(candidate.ip):
            return
        candidate.sdpMid = data.get("sdpMid")
        candidate.sdpMLineIndex = data.get("sdpMLineIndex")
        with contextlib.suppress(ValueError):
            await self.pc.addIceCandidate(candidate)

    def _adopt(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("open")
        def on_open() -> None:
            self.opened.set()

        @channel.on("close")
        def on_close() -> None:
            self.closed.set()

        if channel.readyState == "open":
            self.opened.set()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.closed.set()

    def _start_nat_probe(self) -> None:
        if len(self.stun_servers) >= 2 and self._nat_probe is None:
            self._nat_probe = asyncio.ensure_future(_probe_nat(self.stun_servers))

    def _nat_mapping(self) -> ice_probe.NatMapping | None:
        probe = self._nat_probe
        if probe is None or not probe.done() or probe.cancelled() or probe.exception() is not None:
            return None
        return probe.result()

    def _no_route(self) -> NoRoute:
        mapping = self._nat_mapping()
        observation = ice_probe.observe(self.pc, mapping.symmetric if mapping is not None else None)
        diagnosis = explain_no_route(observation)
        return NoRoute(diagnosis, observation.to_dict())

    # -- facts for the summary -------------------------------------------------------

    def ice_server_urls(self) -> list[str]:
        """The ICE servers this connection was built with: [] means host candidates only."""
        urls: list[str] = []
        for server in self.configuration.iceServers or []:
            urls.extend([server.urls] if isinstance(server.urls, str) else server.urls)
        return urls

    def max_message_size(self) -> int:
        return min(LOCAL_MAX_MESSAGE_SIZE, ice_probe.remote_max_message_size(self.pc))

    async def describe(self) -> dict[str, Any]:
        """Candidate types and the selected pair with its RTT (A.4)."""
        with contextlib.suppress(Exception):
            await ice_probe.measure_rtt(self.pc)
        facts: dict[str, Any] = {
            "local_candidate_types": ice_probe.local_candidate_types(self.pc),
            "remote_candidate_types": ice_probe.remote_candidate_types(self.pc),
            "stun_answered": ice_probe.stun_answered(self.pc),
            "selected_pair": ice_probe.selected_pair(self.pc),
            "channel": self.channel_options(),
        }
        if self._nat_probe is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._nat_probe), NAT_PROBE_TIMEOUT)
            mapping = self._nat_mapping()
            facts["nat_mapping"] = mapping.to_dict() if mapping is not None else None
        return facts

    def channel_options(self) -> dict[str, Any] | None:
        """The DataChannel as negotiated: what this side actually runs with."""
        channel = self.channel
        if channel is None:
            return None
        return {
            "label": channel.label,
            "protocol": channel.protocol,
            "ordered": channel.ordered,
            "max_retransmits": channel.maxRetransmits,
            "max_packet_life_time": channel.maxPacketLifeTime,
            "max_message_size": self.max_message_size(),
        }

    async def close(self, *, graceful: bool, timeout: float = 3.0) -> None:
        """Close the channel first (lossless, see aiortc-facts.md), then the connection."""
        if graceful and self.channel is not None and self.channel.readyState == "open":
            self.channel.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), timeout)
        if self._nat_probe is not None:
            self._nat_probe.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()


async def _probe_nat(stun_servers: list[str]) -> ice_probe.NatMapping | None:
    """The NAT mapping probe against the configured STUN servers' distinct IPv4
    addresses (names resolved without blocking the loop); None with fewer than two."""
    loop = asyncio.get_running_loop()
    targets: dict[str, tuple[str, int]] = {}
    for url in stun_servers:
        host, port = stun_address(url)
        with contextlib.suppress(OSError):
            infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            if infos:
                address = infos[0][4]
                targets.setdefault(str(address[0]), (str(address[0]), int(address[1])))
    if len(targets) < 2:
        return None
    return await ice_probe.probe_nat_mapping(list(targets.values()), timeout=NAT_PROBE_TIMEOUT)


def is_mdns_host(host: str) -> bool:
    """Whether a candidate's address is an mDNS name (RFC 8445 obfuscation), not an IP."""
    return host.lower().endswith(".local")


def without_mdns_candidates(sdp: str) -> str:
    """``sdp`` without its ``a=candidate`` lines whose address is an mDNS name."""
    kept = []
    for line in sdp.splitlines(keepends=True):
        # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
        fields = line.split(" ", 5)
        if line.startswith("a=candidate:") and len(fields) > 4 and is_mdns_host(fields[4]):
            continue
        kept.append(line)
    return "".join(kept)
