"""Signaling plane (Appendix C): the wire messages shared by server and client.

Every WebSocket text frame carries one JSON object tagged by ``t`` (C.2)::

    client -> server   join    {room, role}
    server -> client   joined  {room, peer_present}
    server -> client   peer    {role, event: "joined" | "left"}
    both ways          signal  {data: {...}}    relayed unchanged to the other peer
    server -> client   error   {code, message}  then the server closes the socket

What clients send is decoded strictly (unknown fields are a ``bad_message``);
what the server sends is decoded leniently so a newer server may add fields.
The server itself lives in :mod:`.server`, the client in :mod:`.client`; this
module stays import-light so either side can use the types alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

MAX_MESSAGE_BYTES: Final = 64 * 1024  # C.2: anything larger is refused with too_large

Role = Literal["sender", "receiver"]
PeerEvent = Literal["joined", "left"]
ErrorCode = Literal[
    "room_full", "role_taken", "unknown_room", "bad_message", "too_large", "rate_limited"
]
RoomCode = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


def other_role(role: Role) -> Role:
    return "receiver" if role == "sender" else "sender"


class _Message(msgspec.Struct, tag_field="t", kw_only=True, frozen=True):
    """Base of every signaling message."""


class Join(_Message, tag="join", forbid_unknown_fields=True, kw_only=True, frozen=True):
    room: RoomCode
    role: Role


class Joined(_Message, tag="joined", kw_only=True, frozen=True):
    room: str
    peer_present: bool


class Peer(_Message, tag="peer", kw_only=True, frozen=True):
    role: Role
    event: PeerEvent


class Signal(_Message, tag="signal", kw_only=True, frozen=True):
    """An SDP description or ICE candidate for the other peer, relayed as is."""

    data: dict[str, Any]


class Error(_Message, tag="error", kw_only=True, frozen=True):
    code: str  # an ErrorCode from this server; str so newer codes still decode
    message: str


ServerMessage = Joined | Peer | Signal | Error

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Error",
    "ErrorCode",
    "Join",
    "Joined",
    "Peer",
    "PeerEvent",
    "Role",
    "ServerMessage",
    "Signal",
    "other_role",
]
