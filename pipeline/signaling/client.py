"""Signaling client (Appendix C): join a room, then exchange ``signal`` data.

Typical use::

    async with SignalingClient() as signaling:
        await signaling.connect(url)
        await signaling.join(code, "sender")
        await signaling.wait_peer()
        await signaling.send_signal({"type": "offer", "sdp": sdp})
        message = await signaling.receive()   # Peer or Signal

Every failure surfaces as :class:`SignalingError`: the server's ``error`` codes
(C.2) as they come, plus three of the client's own, ``connect_failed`` (the
server could not be reached), ``closed`` (the socket closed; ``message`` says
why if the server did) and ``bad_message`` (the server sent something that is
not a C.2 message).
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from . import Error, Join, Joined, Peer, Role, ServerMessage, Signal

_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_encode = msgspec.json.Encoder().encode


# A socket that a NAT rebinding or a long cut killed is noticed within 1.5x this.
HEARTBEAT_SECONDS = 5.0


class SignalingError(Exception):
    """The server refused us (``code`` from C.2) or the connection failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SignalingClient:
    """One WebSocket to the signaling server; owns its ClientSession unless given one."""

    def __init__(self, *, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        # Signals that arrived while wait_peer() was looking for `peer joined`.
        self._pending: deque[Signal] = deque()
        self.room: str | None = None
        self.role: Role | None = None
        self.peer_present = False

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, url: str, *, timeout: float = 10.0) -> None:
        if self._ws is not None:
            raise RuntimeError("already connected")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout):
                self._ws = await self._session.ws_connect(url, heartbeat=HEARTBEAT_SECONDS)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SignalingError("connect_failed", f"{url}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        try:
            if ws is not None:
                await ws.close()
        finally:
            if self._owns_session and self._session is not None:
                session, self._session = self._session, None
                await session.close()

    async def join(self, room: str, role: Role, *, timeout: float = 10.0) -> Joined:
        """Enter ``room``; raises SignalingError (e.g. ``unknown_room``) if refused."""
        await self._send(Join(room=room, role=role))
        message = await self._next_message(timeout)
        if not isinstance(message, Joined):
            raise SignalingError("bad_message", f"expected joined, got {message!r}")
        self.room, self.role = message.room, role
        self.peer_present = message.peer_present
        return message

    async def send_signal(self, data: dict[str, Any]) -> None:
        """Send an SDP description or ICE candidate to the other peer."""
        await self._send(Signal(data=data))

    async def receive(self, timeout: float | None = None) -> Peer | Signal:
        """The next ``peer`` event or ``signal`` from the other side."""
        if self._pending:
            return self._pending.popleft()
        return await self._next_event(timeout)

    async def wait_peer(self, timeout: float | None = None) -> None:
        """Return once the other side is in the room (now or when it joins).

        Signals arriving meanwhile are kept for :meth:`receive`; ``peer`` events
        are consumed.
        """
        async with asyncio.timeout(timeout):
            while not self.peer_present:
                event = await self._next_event(None)
                if isinstance(event, Signal):
                    self._pending.append(event)

    async def _next_event(self, timeout: float | None) -> Peer | Signal:
        message = await self._next_message(timeout)
        if isinstance(message, Joined):
            raise SignalingError("bad_message", "unexpected joined")
        if isinstance(message, Peer):
            self.peer_present = message.event == "joined"
        return message

    async def _send(self, message: msgspec.Struct) -> None:
        ws = self._require_ws()
        try:
            await ws.send_str(_encode(message).decode())
        except ConnectionError as exc:
            raise SignalingError("closed", str(exc) or "connection closed") from exc

    async def _next_message(self, timeout: float | None) -> Joined | Peer | Signal:
        ws = self._require_ws()
        msg = await ws.receive(timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                message = _decoder.decode(msg.data)
            except msgspec.DecodeError as exc:
                raise SignalingError("bad_message", f"from server: {exc}") from None
            if isinstance(message, Error):
                raise SignalingError(message.code, message.message)
            return message
        if msg.type is aiohttp.WSMsgType.CLOSE:
            raise SignalingError("closed", msg.extra or f"closed by server ({msg.data})")
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise SignalingError("closed", f"connection failed: {msg.data}")
        if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise SignalingError("closed", "connection closed")
        raise SignalingError("bad_message", f"unexpected {msg.type.name} frame")

    def _require_ws(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is None:
            raise SignalingError("closed", "not connected")
        return self._ws
