"""WebSocket signaling server (Appendix C).

It introduces two peers and relays their SDP descriptions and ICE candidates;
file bytes never pass through it.  Three limits make sure they could not:
every message is at most 64 KiB, ``signal`` data must be a description or a
candidate, and each role may send at most ``max_signals`` of them per room.
The relayed bytes are counted per room and in total (:attr:`stats`) and logged
when a room closes.

Room lifecycle::

                 sender joins                   last member leaves
    (no room) ───────────────► open ─────────────────────────────────► closed
                                │                                      ▲
                                │ room_ttl after the sender's join     │
                                ▼                                      │
                             expired ──────────────────────────────────┘
                                        last member leaves

An open room is found by its normalized code; a receiver's join to a code with
no open room gets ``unknown_room``.  Expiry takes the code out of the table:
nobody can join it any more, and a member still waiting alone there is
disconnected (close reason ``room expired``).  A pair that already met keeps
relaying until both leave, so a transfer outlasting the TTL can still
renegotiate through the sockets it kept open (C.5).  Each room holds at most
one socket per role; a member that left may rejoin the open room with the same
role (C.5), and its ``signal`` count carries over.

Failed joins (``unknown_room``, ``role_taken``, ``room_full``) count against
the client's address (an IPv6 client counts by its /64): past
``unknown_room_limit`` of them within a minute, every join from that address
is answered ``rate_limited``, so neither role can probe codes online.

A socket must join within ``join_deadline`` seconds of connecting, or it is
closed (WebSocket close code 1008, reason ``no join within N s``): Appendix C
has no error code for it, so none is sent.  At most ``max_unjoined_per_address``
sockets of one address (an IPv6 /64) may be connected and not yet joined; one
more is answered ``rate_limited`` and closed.  Together they bound what idle
sockets cost: without them only the process's fd limit did.

At most ``max_rooms_per_address`` rooms opened by one address (an IPv6 /64)
may be open at once; a sender ``join`` that would open one more is answered
``rate_limited`` and closed.  A room counts against the address of the sender
that opened it until it closes (its last member left), expired or not; a
sender rejoining its open room (C.5) opens nothing.  With the join deadline
this bounds what one address can hold: every socket it keeps is in a room
it opened, waiting to join, or a receiver in someone's room.

Given a ``web_root`` the server also serves the browser app (C.1) at ``/``
and its files by path (:mod:`.webapp` decides what is servable).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import msgspec
import psutil  # type: ignore[import-untyped]  # no types-psutil in requirements.lock
from aiohttp import WSCloseCode, WSMsgType, web

from . import MAX_MESSAGE_BYTES, Error, ErrorCode, Join, Joined, Peer, Role, other_role
from .codes import normalize_code
from .webapp import mime_type, resolve_asset

log = logging.getLogger(__name__)

FAILED_JOIN_WINDOW: Final = 60.0
HEARTBEAT_SECONDS: Final = 5.0
JOIN_DEADLINE_SECONDS: Final = 10.0
MAX_UNJOINED_PER_ADDRESS: Final = 256  # a NAT's many users join within milliseconds
MAX_ROOMS_PER_ADDRESS: Final = 256  # an office NAT's senders, each one room at a time
# aiohttp refuses a frame above max_msg_size before reading it, closing with
# 1009 from inside receive(); headroom above the protocol limit lets ordinary
# oversize messages get a proper too_large answer from _on_text, and
# _SignalingSocket covers the rest.
_READ_LIMIT: Final = 2 * MAX_MESSAGE_BYTES


class _RawSignal(
    msgspec.Struct, tag_field="t", tag="signal", forbid_unknown_fields=True, frozen=True
):
    """A client's ``signal``, its data kept as the original bytes to relay them unchanged."""

    data: msgspec.Raw


class _SignalData(msgspec.Struct, frozen=True):
    """What ``signal.data`` must look like; other fields (``usernameFragment``...) pass."""

    type: Literal["offer", "answer"] | None = None
    sdp: str | None = None
    candidate: str | msgspec.UnsetType | None = msgspec.UNSET


_client_decoder: msgspec.json.Decoder[Join | _RawSignal] = msgspec.json.Decoder(Join | _RawSignal)
_signal_data_decoder = msgspec.json.Decoder(_SignalData)
_encode = msgspec.json.Encoder().encode


def _text(message: msgspec.Struct) -> str:
    return _encode(message).decode()


_TOO_LARGE_TEXT: Final = _text(
    Error(code="too_large", message=f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
)


class _Refused(Exception):
    """The client broke a rule: answer ``error`` with ``code`` and close its socket."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class _SignalingSocket(web.WebSocketResponse):
    """Says ``too_large`` before aiohttp closes with 1009 for a frame above max_msg_size.

    aiohttp handles that case inside ``receive()``, whose only hook is ``close()``.
    """

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            with contextlib.suppress(ConnectionError):
                await self.send_str(_TOO_LARGE_TEXT)
        return await super().close(code=code, message=message, drain=drain)


@dataclass(eq=False)
class _Room:
    number: int  # names the room in logs, which must not leak the code
    code: str
    expires_at: float
    opener: str  # the address key of the sender that opened it
    members: dict[Role, web.WebSocketResponse] = field(default_factory=dict)
    signals: dict[Role, int] = field(default_factory=lambda: {"sender": 0, "receiver": 0})
    relayed_bytes: int = 0
    relayed_messages: int = 0
    expired: bool = False


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    address: str
    room: _Room | None = None
    role: Role = "sender"
    counted_unjoined: bool = True  # in SignalingServer._unjoined until it joins or goes


def _count_down(counts: dict[str, int], key: str) -> None:
    """One fewer for ``key``; a count that reaches zero leaves (no zero entries)."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


def _address_key(remote: str | None) -> str:
    """The unit the failed-join limit counts by: an IPv4 address or an IPv6 /64."""
    if remote is None:
        return "unknown"
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


def reachable_hosts(bind_host: str, addresses: Iterable[str]) -> list[str]:
    """The hosts another machine can put in the URL of a server bound to ``bind_host``.

    A specific address (or name) is its own answer.  A wildcard (``0.0.0.0``,
    ``::``) is no address at all: a URL naming it works, if anywhere, only on this
    machine.  It becomes each of ``addresses`` (this machine's interface addresses)
    that the socket listens on and another machine can reach: the wildcard's family
    (asyncio binds ``::`` with IPV6_V6ONLY), not loopback, not link-local (an IPv6
    one needs a ``%zone`` that differs on the other machine).  With none left, the
    loopback address of the family.
    """
    try:
        bound = ipaddress.ip_address(bind_host)
    except ValueError:
        return [bind_host]
    if not bound.is_unspecified:
        return [bind_host]
    hosts: list[str] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if ip.version != bound.version or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
            continue
        if str(ip) not in hosts:
            hosts.append(str(ip))
    return hosts or ["127.0.0.1" if bound.version == 4 else "::1"]


def ws_url(host: str, port: int) -> str:
    """``ws://HOST:PORT/ws``, an IPv6 address in brackets."""
    return f"ws://[{host}]:{port}/ws" if ":" in host else f"ws://{host}:{port}/ws"


def _interface_addresses() -> list[str]:
    return [str(a.address) for addrs in psutil.net_if_addrs().values() for a in addrs]


class SignalingServer:
    """The Appendix C server; embeddable (``async with``) or run by ``pipeline-signal``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        room_ttl: float = 3600.0,
        max_signals: int = 200,
        unknown_room_limit: int = 20,
        web_root: str | Path | None = None,
        join_deadline: float = JOIN_DEADLINE_SECONDS,
        max_unjoined_per_address: int = MAX_UNJOINED_PER_ADDRESS,
        max_rooms_per_address: int = MAX_ROOMS_PER_ADDRESS,
    ) -> None:
        if room_ttl <= 0 or not join_deadline > 0:
            raise ValueError("room_ttl and join_deadline must be positive")
        if min(unknown_room_limit, max_unjoined_per_address, max_rooms_per_address) < 1:
            raise ValueError(
                "unknown_room_limit, max_unjoined_per_address and max_rooms_per_address must be >= 1"
            )
        if max_signals < 0:
            raise ValueError("max_signals must be >= 0")
        self._max_rooms = max_rooms_per_address
        # Rooms open now (expired ones included until they close), per opener's address key.
        self._rooms_by_address: dict[str, int] = {}
        self._join_deadline = join_deadline
        self._max_unjoined = max_unjoined_per_address
        # Sockets connected and not yet in a room, per address key; no zero entries.
        self._unjoined: dict[str, int] = {}
        self._host = host
        self._port = port
        self._room_ttl = room_ttl
        self._max_signals = max_signals
        self._unknown_room_limit = unknown_room_limit
        self._web_root = Path(web_root) if web_root is not None else None
        # Insertion order is creation order, hence expiry order (one TTL for all).
        self._rooms: dict[str, _Room] = {}
        # Ordered by each address's latest failure, so stale entries sit in front.
        self._failed_joins: OrderedDict[str, deque[float]] = OrderedDict()
        self._sockets: set[web.WebSocketResponse] = set()
        self._closing: set[asyncio.Future[bool]] = set()  # join-deadline closes in flight
        self._room_numbers = itertools.count(1)
        self._rooms_opened = 0
        self._relayed_bytes = 0
        self._relayed_messages = 0
        self._runner: web.AppRunner | None = None
        self._expiry_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("server already started")
        if self._web_root is not None and not (self._web_root / "index.html").is_file():
            raise FileNotFoundError(f"no index.html in the web app directory {self._web_root}")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/ws", self._handle_ws)
        if self._web_root is not None:
            # After /ws and /healthz, which keep their meaning.
            app.router.add_get("/{path:.*}", self._asset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        # Owned by this server: cancelled and awaited in close().
        self._expiry_task = asyncio.create_task(self._expire_rooms_forever())

    async def close(self) -> None:
        """Disconnect every client and stop listening; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for ws in list(self._sockets)
            ),
            return_exceptions=True,
        )
        await runner.cleanup()

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/ws`` with the address and the port actually bound."""
        if self._runner is None:
            raise RuntimeError("server not started")
        return ws_url(self._host, self._port)

    @property
    def reachable_urls(self) -> list[str]:
        """The URLs to give a peer on another machine (:func:`reachable_hosts`):
        :attr:`url`, or for a wildcard bind one per address of this machine."""
        if self._runner is None:
            raise RuntimeError("server not started")
        return [ws_url(host, self._port) for host in reachable_hosts(self._host, _interface_addresses())]

    @property
    def serves_page(self) -> bool:
        """Whether ``/`` is the browser app (a web root was given)."""
        return self._web_root is not None

    @property
    def stats(self) -> dict[str, int]:
        """Totals since start: signal messages and bytes (frames as sent) relayed."""
        return {
            "relayed_messages": self._relayed_messages,
            "relayed_bytes": self._relayed_bytes,
            "rooms_opened": self._rooms_opened,
            "open_rooms": len(self._rooms),
        }

    @property
    def rooms_by_address(self) -> dict[str, int]:
        """Rooms not yet closed (expired ones included), per opener's address key."""
        return dict(self._rooms_by_address)

    @property
    def unjoined_sockets(self) -> int:
        """Sockets connected now that have not joined a room (yet)."""
        return sum(self._unjoined.values())

    def room_stats(self, code: str) -> dict[str, int] | None:
        """Counters of the open room with this code, or None if there is none."""
        room = self._rooms.get(normalize_code(code))
        if room is None:
            return None
        return {
            "relayed_messages": room.relayed_messages,
            "relayed_bytes": room.relayed_bytes,
            "sender_signals": room.signals["sender"],
            "receiver_signals": room.signals["receiver"],
        }

    # -- HTTP ------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        assert self._web_root is not None
        path = resolve_asset(self._web_root, request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound()
        # no-cache: revalidate every load (FileResponse answers 304 on a matching
        # ETag), so a page from an older install never runs against a newer peer.
        return web.FileResponse(
            path, headers={"Content-Type": mime_type(path), "Cache-Control": "no-cache"}
        )

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        ws = _SignalingSocket(max_msg_size=_READ_LIMIT, heartbeat=HEARTBEAT_SECONDS, compress=False)
        await ws.prepare(request)
        client = _Client(ws=ws, address=_address_key(request.remote))
        self._sockets.add(ws)
        unjoined = self._unjoined.get(client.address, 0)
        self._unjoined[client.address] = unjoined + 1
        deadline = asyncio.get_running_loop().call_later(
            self._join_deadline, self._join_deadline_passed, client
        )
        try:
            if unjoined >= self._max_unjoined:
                raise _Refused(
                    "rate_limited",
                    f"{unjoined} connections from your address have not joined yet; join or close them",
                )
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_text(client, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break  # aiohttp already closed the socket
                else:
                    raise _Refused("bad_message", "frames must be text")
        except _Refused as refusal:
            await self._send(ws, Error(code=refusal.code, message=refusal.message))
            await ws.close()
        finally:
            deadline.cancel()
            self._sockets.discard(ws)
            self._joined_or_gone(client)
            await self._leave(client)
        return ws

    def _joined_or_gone(self, client: _Client) -> None:
        """``client`` no longer counts as connected-and-unjoined (called once per socket)."""
        if client.counted_unjoined:
            client.counted_unjoined = False
            _count_down(self._unjoined, client.address)

    def _join_deadline_passed(self, client: _Client) -> None:
        if client.room is None and client.counted_unjoined and not client.ws.closed:
            reason = f"no join within {self._join_deadline:g} s".encode()
            # Its handler sees the close and cleans up; the task is only the close itself.
            task = asyncio.ensure_future(
                client.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason)
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- messages --------------------------------------------------------------

    async def _on_text(self, client: _Client, text: str) -> None:
        payload = text.encode()
        if len(payload) > MAX_MESSAGE_BYTES:
            raise _Refused(
                "too_large", f"message of {len(payload)} bytes; the limit is {MAX_MESSAGE_BYTES}"
            )
        try:
            message = _client_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise _Refused("bad_message", str(exc)) from None
        if isinstance(message, Join):
            await self._join(client, message)
        else:
            await self._relay(client, message)

    async def _join(self, client: _Client, join: Join) -> None:
        if client.room is not None:
            raise _Refused("bad_message", "this socket already joined a room")
        code = normalize_code(join.room)
        if not code:
            raise _Refused("bad_message", "empty room code")
        now = time.monotonic()
        if self._failed_joins_in_window(client.address, now) >= self._unknown_room_limit:
            raise _Refused("rate_limited", "too many failed joins; wait a minute")
        room = self._rooms.get(code)
        if room is None:
            if join.role == "receiver":
                self._record_failed_join(client.address, now)
                raise _Refused("unknown_room", "no room has this code; check it with the sender")
            room = self._open_room(code, client.address, now)
        elif len(room.members) == 2:
            self._record_failed_join(client.address, now)
            raise _Refused("room_full", "this room already has a sender and a receiver")
        elif join.role in room.members:
            self._record_failed_join(client.address, now)
            raise _Refused("role_taken", f"this room already has a {join.role}")
        room.members[join.role] = client.ws
        client.room, client.role = room, join.role
        self._joined_or_gone(client)
        peer = room.members.get(other_role(join.role))
        # Uncompressed sends write synchronously, so `joined` reaches the joiner
        # before anything the peer relays once it hears `peer joined`.
        await self._send(client.ws, Joined(room=code, peer_present=peer is not None))
        if peer is not None:
            await self._send(peer, Peer(role=join.role, event="joined"))

    async def _relay(self, client: _Client, signal: _RawSignal) -> None:
        room = client.room
        if room is None:
            raise _Refused("bad_message", "join a room before sending signal")
        try:
            data = _signal_data_decoder.decode(signal.data)
        except msgspec.DecodeError as exc:
            raise _Refused("bad_message", f"signal data: {exc}") from None
        if data.candidate is msgspec.UNSET and (data.type is None or data.sdp is None):
            raise _Refused("bad_message", "signal data must be a description or a candidate")
        room.signals[client.role] += 1
        if room.signals[client.role] > self._max_signals:
            raise _Refused(
                "rate_limited", f"at most {self._max_signals} signal messages per room and role"
            )
        peer = room.members.get(other_role(client.role))
        if peer is None:
            return  # nobody to hand it to; a fresh offer follows the peer's (re)join
        frame = _encode(signal)  # carries the data's original bytes, verbatim
        room.relayed_messages += 1
        room.relayed_bytes += len(frame)
        self._relayed_messages += 1
        self._relayed_bytes += len(frame)
        await self._send(peer, frame.decode())

    async def _leave(self, client: _Client) -> None:
        room = client.room
        if room is None:
            return
        client.room = None
        del room.members[client.role]  # a client in a room holds its role there
        peer = room.members.get(other_role(client.role))
        if peer is None:
            self._close_room(room)
        else:
            await self._send(peer, Peer(role=client.role, event="left"))

    @staticmethod
    async def _send(ws: web.WebSocketResponse, message: msgspec.Struct | str) -> None:
        text = message if isinstance(message, str) else _text(message)
        # A socket closing under us is its own handler's business.
        with contextlib.suppress(ConnectionError):
            await ws.send_str(text)

    # -- rooms -----------------------------------------------------------------

    def _open_room(self, code: str, opener: str, now: float) -> _Room:
        opened = self._rooms_by_address.get(opener, 0)
        if opened >= self._max_rooms:
            raise _Refused(
                "rate_limited",
                f"{opened} rooms opened from your address are still open; finish or leave one first",
            )
        self._rooms_by_address[opener] = opened + 1
        room = _Room(
            number=next(self._room_numbers), code=code, expires_at=now + self._room_ttl, opener=opener
        )
        self._rooms[code] = room
        self._rooms_opened += 1
        log.debug("room #%d opened", room.number)
        return room

    def _close_room(self, room: _Room) -> None:
        if self._rooms.get(room.code) is room:
            del self._rooms[room.code]
        _count_down(self._rooms_by_address, room.opener)
        log.info(
            "room #%d closed%s: relayed %d signal messages, %d bytes",
            room.number,
            " (expired)" if room.expired else "",
            room.relayed_messages,
            room.relayed_bytes,
        )

    async def _expire_rooms_forever(self) -> None:
        interval = min(1.0, self._room_ttl / 4)
        while True:
            await asyncio.sleep(interval)
            await self._expire_rooms(time.monotonic())

    async def _expire_rooms(self, now: float) -> None:
        lonely: list[web.WebSocketResponse] = []
        while self._rooms:
            room = next(iter(self._rooms.values()))
            if room.expires_at > now:
                break
            del self._rooms[room.code]
            room.expired = True
            log.info("room #%d expired", room.number)
            if len(room.members) < 2:
                lonely.extend(room.members.values())
        # Their handlers see the close, leave, and so close the room.
        await asyncio.gather(
            *(ws.close(message=b"room expired") for ws in lonely), return_exceptions=True
        )

    # -- failed-join limit -----------------------------------------------------

    def _failed_joins_in_window(self, address: str, now: float) -> int:
        horizon = now - FAILED_JOIN_WINDOW
        while self._failed_joins:
            oldest = next(iter(self._failed_joins.values()))
            if oldest[-1] > horizon:
                break
            self._failed_joins.popitem(last=False)
        times = self._failed_joins.get(address)
        if times is None:
            return 0
        while times[0] <= horizon:
            times.popleft()
        return len(times)

    def _record_failed_join(self, address: str, now: float) -> None:
        times = self._failed_joins.get(address)
        if times is None:
            times = self._failed_joins[address] = deque(maxlen=self._unknown_room_limit)
        times.append(now)
        self._failed_joins.move_to_end(address)
