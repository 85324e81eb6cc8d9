"""The signaling server and client (Appendix C) over real sockets on 127.0.0.1.

Protocol rules are checked with raw WebSockets so the frames on the wire are
exactly what the test wrote; the client API is checked on its own.  Each test
is a plain function around ``asyncio.run`` with an overall deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from pipeline.cli import signal_server
from pipeline.signaling import Peer, Signal
from pipeline.signaling import server as server_module
from pipeline.signaling.client import SignalingClient, SignalingError
from pipeline.signaling.server import SignalingServer

ROOT = Path(__file__).resolve().parents[2]
CODE = "7-orbit-lantern-velvet"
DEADLINE = 20.0

Ws = aiohttp.ClientWebSocketResponse
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=- ünïcode\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
}
END_OF_CANDIDATES = {"candidate": None}


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await test()

    asyncio.run(bounded())


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[SignalingServer, aiohttp.ClientSession]]:
    async with SignalingServer(**options) as server, aiohttp.ClientSession() as session:
        yield server, session


async def send(ws: Ws, message: dict[str, Any]) -> None:
    await ws.send_str(json.dumps(message))


async def receive(ws: Ws) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    decoded: dict[str, Any] = json.loads(msg.data)
    return decoded


async def assert_closed(ws: Ws) -> None:
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg


async def assert_refused(ws: Ws, code: str) -> None:
    message = await receive(ws)
    assert message["t"] == "error" and message["code"] == code, message
    assert message["message"]
    await assert_closed(ws)


async def join(
    session: aiohttp.ClientSession, server: SignalingServer, role: str, room: str = CODE
) -> tuple[Ws, dict[str, Any]]:
    ws = await session.ws_connect(server.url)
    await send(ws, {"t": "join", "room": room, "role": role})
    return ws, await receive(ws)


async def pair(session: aiohttp.ClientSession, server: SignalingServer) -> tuple[Ws, Ws]:
    sender, joined = await join(session, server, "sender")
    assert joined == {"t": "joined", "room": CODE, "peer_present": False}
    receiver, joined = await join(session, server, "receiver")
    assert joined == {"t": "joined", "room": CODE, "peer_present": True}
    assert await receive(sender) == {"t": "peer", "role": "receiver", "event": "joined"}
    return sender, receiver


async def wait_for_open_rooms(server: SignalingServer, count: int) -> None:
    while server.stats["open_rooms"] != count:
        await asyncio.sleep(0.01)


# -- HTTP ---------------------------------------------------------------------


def test_healthz_answers_ok() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            assert server.url.startswith("ws://127.0.0.1:") and server.url.endswith("/ws")
            http = server.url.replace("ws://", "http://").removesuffix("/ws")
            async with session.get(f"{http}/healthz") as response:
                assert response.status == 200
                assert await response.text() == "ok"
            async with session.get(f"{http}/") as response:
                assert response.status == 404  # no page unless asked for

    run(scenario)


def web_app(root: Path) -> Path:
    """A small app tree like pipeline/web/, plus things that must stay private."""
    (root / "vendor").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>pipeline</title>")
    (root / "app.mjs").write_text("export const x = 1;")
    (root / "main.js").write_text("import './app.mjs';")
    (root / "vendor" / "sha256.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / ".env").write_text("hidden")
    (root / "package-lock.json.orig").write_text("unknown type")
    return root


def test_the_web_app_is_served_with_module_and_wasm_types(tmp_path: Path) -> None:
    root = web_app(tmp_path / "web")

    async def scenario() -> None:
        async with serving(web_root=root) as (server, session):
            assert server.serves_page
            http = server.url.replace("ws://", "http://").removesuffix("/ws")
            expected = {
                "/": ("text/html", (root / "index.html").read_bytes()),
                "/index.html": ("text/html", (root / "index.html").read_bytes()),
                "/app.mjs": ("text/javascript", (root / "app.mjs").read_bytes()),
                "/main.js": ("text/javascript", (root / "main.js").read_bytes()),
                "/vendor/sha256.wasm": ("application/wasm", (root / "vendor" / "sha256.wasm").read_bytes()),
            }
            for path, (mime, body) in expected.items():
                async with session.get(f"{http}{path}") as response:
                    assert response.status == 200, path
                    assert response.content_type == mime, path
                    assert response.headers["Cache-Control"] == "no-cache"
                    assert await response.read() == body
            async with session.get(f"{http}/healthz") as response:
                assert await response.text() == "ok"  # not shadowed by the app
            sender, joined = await join(session, server, "sender")
            assert joined["t"] == "joined"  # /ws neither
            await sender.close()

    run(scenario)


def test_the_web_app_never_serves_outside_its_directory_or_a_listing(tmp_path: Path) -> None:
    root = web_app(tmp_path / "web")
    (tmp_path / "secret.html").write_text("outside")
    (root / "vendor" / "escape.html").symlink_to(tmp_path / "secret.html")

    async def scenario() -> None:
        async with serving(web_root=root) as (server, session):
            http = server.url.replace("ws://", "http://").removesuffix("/ws")
            refused = [
                "/vendor/",  # a directory: no listing
                "/vendor",
                "/.env",  # hidden
                "/package-lock.json.orig",  # not a type the app uses
                "/missing.js",
                "/vendor/escape.html",  # a symbolic link out of the root
                "/../secret.html",
                "/%2e%2e/secret.html",
                "/vendor/%2e%2e/%2e%2e/secret.html",
                "/vendor/..%2f..%2fsecret.html",
                "/%2fetc%2fpasswd.txt",
                "/..%5csecret.html",
            ]
            for path in refused:
                # yarl would normalize the dots away; send the path as written.
                async with session.get(yarl.URL(f"{http}{path}", encoded=True)) as response:
                    assert response.status == 404, path
                    assert b"outside" not in await response.read(), path

    run(scenario)


def test_without_a_web_root_there_is_no_page() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            assert not server.serves_page
            http = server.url.replace("ws://", "http://").removesuffix("/ws")
            async with session.get(f"{http}/index.html") as response:
                assert response.status == 404

    run(scenario)


def test_a_web_root_without_index_html_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        asyncio.run(SignalingServer(web_root=tmp_path).start())


# -- rooms ----------------------------------------------------------------------


def test_join_reports_peer_presence_and_normalizes_the_code() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, joined = await join(session, server, "sender", room=f" {CODE.upper()} ")
            assert joined == {"t": "joined", "room": CODE, "peer_present": False}
            receiver, joined = await join(session, server, "receiver", room=f"{CODE}\n")
            assert joined == {"t": "joined", "room": CODE, "peer_present": True}
            assert await receive(sender) == {"t": "peer", "role": "receiver", "event": "joined"}
            await sender.close()
            await receiver.close()

    run(scenario)


def test_unknown_room_for_a_receiver() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            receiver = await session.ws_connect(server.url)
            await send(receiver, {"t": "join", "room": CODE, "role": "receiver"})
            await assert_refused(receiver, "unknown_room")

    run(scenario)


def test_second_sender_gets_role_taken_and_a_third_party_room_full() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, _ = await join(session, server, "sender")
            intruder = await session.ws_connect(server.url)
            await send(intruder, {"t": "join", "room": CODE, "role": "sender"})
            await assert_refused(intruder, "role_taken")
            receiver, _ = await join(session, server, "receiver")
            third = await session.ws_connect(server.url)
            await send(third, {"t": "join", "room": CODE, "role": "receiver"})
            await assert_refused(third, "room_full")
            await sender.close()
            await receiver.close()

    run(scenario)


def test_peer_left_rejoin_and_room_forgotten_after_both_left() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            await sender.close()
            assert await receive(receiver) == {"t": "peer", "role": "sender", "event": "left"}
            # C.5: the sender comes back to the same room and the receiver hears of it.
            sender, joined = await join(session, server, "sender")
            assert joined == {"t": "joined", "room": CODE, "peer_present": True}
            assert await receive(receiver) == {"t": "peer", "role": "sender", "event": "joined"}
            await send(sender, {"t": "signal", "data": OFFER})
            assert await receive(receiver) == {"t": "signal", "data": OFFER}
            await receiver.close()
            assert await receive(sender) == {"t": "peer", "role": "receiver", "event": "left"}
            await sender.close()
            await wait_for_open_rooms(server, 0)
            late = await session.ws_connect(server.url)
            await send(late, {"t": "join", "room": CODE, "role": "receiver"})
            await assert_refused(late, "unknown_room")

    run(scenario)


def test_room_expires_after_its_ttl() -> None:
    async def scenario() -> None:
        async with serving(room_ttl=0.2) as (server, session):
            # A pair that met keeps relaying past the TTL...
            sender, receiver = await pair(session, server)
            # ...while a sender left waiting alone is told its code expired.
            lonely, _ = await join(session, server, "sender", room="9-ant-bee-cat")
            msg = await lonely.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.extra == "room expired"
            await wait_for_open_rooms(server, 0)
            for room in (CODE, "9-ant-bee-cat"):
                late = await session.ws_connect(server.url)
                await send(late, {"t": "join", "room": room, "role": "receiver"})
                await assert_refused(late, "unknown_room")
            await send(sender, {"t": "signal", "data": OFFER})
            assert await receive(receiver) == {"t": "signal", "data": OFFER}
            await sender.close()
            await receiver.close()

    run(scenario)


# -- relay ----------------------------------------------------------------------


def test_signals_are_relayed_unchanged_both_ways() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            for source, sink, data in [
                (sender, receiver, OFFER),
                (receiver, sender, ANSWER),
                (sender, receiver, CANDIDATE),
                (receiver, sender, CANDIDATE),
                (sender, receiver, END_OF_CANDIDATES),
                (receiver, sender, END_OF_CANDIDATES),
            ]:
                # Odd spacing and escapes: the data's own bytes must come through.
                raw_data = json.dumps(data, indent=1, ensure_ascii=True)
                await source.send_str('{"t": "signal",\n "data": ' + raw_data + "}")
                msg = await sink.receive(timeout=5)
                assert json.loads(msg.data) == {"t": "signal", "data": data}
                assert raw_data in msg.data
            await sender.close()
            await receiver.close()

    run(scenario)


def test_relayed_bytes_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.signaling.server")

    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            received = 0
            for data in (OFFER, CANDIDATE, END_OF_CANDIDATES):
                await send(sender, {"t": "signal", "data": data})
                received += len((await sender_to(receiver)).encode())
            await send(receiver, {"t": "signal", "data": ANSWER})
            received += len((await sender_to(sender)).encode())
            assert server.stats["relayed_messages"] == 4
            assert server.stats["relayed_bytes"] == received
            assert server.room_stats(CODE.upper()) == {
                "relayed_messages": 4,
                "relayed_bytes": received,
                "sender_signals": 3,
                "receiver_signals": 1,
            }
            await sender.close()
            await receiver.close()
            await wait_for_open_rooms(server, 0)
            assert f"relayed 4 signal messages, {received} bytes" in caplog.text
            assert CODE not in caplog.text  # the code is a secret; logs name rooms by number

    async def sender_to(ws: Ws) -> str:
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT
        text: str = msg.data
        return text

    run(scenario)


def test_signals_to_an_absent_peer_are_dropped() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, _ = await join(session, server, "sender")
            await send(sender, {"t": "signal", "data": OFFER})
            receiver, joined = await join(session, server, "receiver")
            assert joined["peer_present"] is True
            await send(sender, {"t": "signal", "data": CANDIDATE})
            assert await receive(receiver) == {"t": "signal", "data": CANDIDATE}
            assert server.stats["relayed_messages"] == 1

    run(scenario)


# -- limits and refusals ----------------------------------------------------------


@pytest.mark.parametrize("size", [70 * 1024, 1024 * 1024])
def test_too_large_message_is_refused(size: int) -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            padding = "a" * size
            await sender.send_str(json.dumps({"t": "signal", "data": {**OFFER, "sdp": padding}}))
            await assert_refused(sender, "too_large")
            assert await receive(receiver) == {"t": "peer", "role": "sender", "event": "left"}
            assert server.stats["relayed_bytes"] == 0

    run(scenario)


def test_a_message_of_exactly_64_kib_passes() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            envelope = json.dumps({"t": "signal", "data": {"type": "offer", "sdp": ""}})
            sdp = "s" * (64 * 1024 - len(envelope))
            data = {"type": "offer", "sdp": sdp}
            await sender.send_str(json.dumps({"t": "signal", "data": data}))
            assert await receive(receiver) == {"t": "signal", "data": data}

    run(scenario)


def test_rate_limited_after_200_signals_per_room_and_role() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            for _ in range(201):
                await send(sender, {"t": "signal", "data": CANDIDATE})
            await assert_refused(sender, "rate_limited")
            for _ in range(200):
                assert await receive(receiver) == {"t": "signal", "data": CANDIDATE}
            assert await receive(receiver) == {"t": "peer", "role": "sender", "event": "left"}
            # The receiver's own budget is untouched.
            await send(receiver, {"t": "signal", "data": ANSWER})
            await asyncio.sleep(0.05)
            assert not receiver.closed

    run(scenario)


def test_signal_budget_survives_a_reconnect() -> None:
    async def scenario() -> None:
        async with serving(max_signals=3) as (server, session):
            sender, receiver = await pair(session, server)
            for _ in range(3):
                await send(sender, {"t": "signal", "data": CANDIDATE})
                await receive(receiver)
            await sender.close()
            assert (await receive(receiver))["event"] == "left"
            sender, joined = await join(session, server, "sender")
            assert joined["peer_present"] is True
            await send(sender, {"t": "signal", "data": OFFER})
            await assert_refused(sender, "rate_limited")

    run(scenario)


def test_failed_joins_are_rate_limited_per_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "FAILED_JOIN_WINDOW", 0.5)  # a short "minute"

    async def scenario() -> None:
        async with serving() as (server, session):
            sender, _ = await join(session, server, "sender")
            for guess in range(20):
                ws, answer = await join(session, server, "receiver", room=f"{guess}-ant-bee-cat")
                assert answer["code"] == "unknown_room"
                await assert_closed(ws)
            # Past the limit even the right code is refused, so guessing learns nothing.
            for role, room in [("receiver", CODE), ("sender", CODE), ("sender", "1-new-room")]:
                ws, answer = await join(session, server, role, room=room)
                assert answer["code"] == "rate_limited"
                await assert_closed(ws)
            await asyncio.sleep(0.6)  # the window slides past the failures
            ws, answer = await join(session, server, "receiver")
            assert answer == {"t": "joined", "room": CODE, "peer_present": True}
            await sender.close()
            await ws.close()

    run(scenario)


def test_a_socket_that_never_joins_is_closed_at_the_join_deadline() -> None:
    async def scenario() -> None:
        async with serving(join_deadline=0.5) as (server, session):
            idle = await session.ws_connect(server.url)
            sender, joined = await join(session, server, "sender")
            assert joined["t"] == "joined"
            assert server.unjoined_sockets == 1
            msg = await idle.receive(timeout=5)
            # No Appendix C error code fits, so no error frame: a policy close with a reason.
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            assert msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION and msg.extra == "no join within 0.5 s"
            await asyncio.sleep(0.3)  # past the deadline, a socket that joined in time stays
            await send(sender, {"t": "signal", "data": OFFER})
            assert not sender.closed
            receiver, joined = await join(session, server, "receiver")
            assert joined["peer_present"] is True
            assert await receive(sender) == {"t": "peer", "role": "receiver", "event": "joined"}
            await unjoined_settles(server, 0)
            await sender.close()
            await receiver.close()

    run(scenario)


async def unjoined_settles(server: SignalingServer, count: int) -> None:
    """The server's handlers run after the client sees a close: wait for them."""
    async with asyncio.timeout(5):
        while server.unjoined_sockets != count:
            await asyncio.sleep(0.01)


def test_unjoined_sockets_are_capped_per_address() -> None:
    async def scenario() -> None:
        async with serving(max_unjoined_per_address=3) as (server, session):
            waiting = [await session.ws_connect(server.url) for _ in range(3)]
            extra = await session.ws_connect(server.url)
            await assert_refused(extra, "rate_limited")
            await unjoined_settles(server, 3)
            # A waiting socket that joins frees its place; one that closes does too.
            await send(waiting[0], {"t": "join", "room": CODE, "role": "sender"})
            assert (await receive(waiting[0]))["t"] == "joined"
            await waiting[1].close()
            await unjoined_settles(server, 1)
            late = [await session.ws_connect(server.url) for _ in range(2)]
            await send(late[1], {"t": "join", "room": CODE, "role": "receiver"})
            assert (await receive(late[1]))["peer_present"] is True
            for ws in [*waiting, *late]:
                await ws.close()
            await unjoined_settles(server, 0)

    run(scenario)


async def rooms_settle(server: SignalingServer, expected: dict[str, int]) -> None:
    async with asyncio.timeout(5):
        while server.rooms_by_address != expected:
            await asyncio.sleep(0.01)


def test_rooms_are_capped_per_opening_address_until_they_close() -> None:
    async def scenario() -> None:
        async with serving(max_rooms_per_address=2, room_ttl=0.3) as (server, session):
            first, joined = await join(session, server, "sender", "1-a")
            assert joined["t"] == "joined"
            second, _ = await join(session, server, "sender", "2-b")
            extra, refused = await join(session, server, "sender", "3-c")
            assert refused["t"] == "error" and refused["code"] == "rate_limited", refused
            assert "rooms" in refused["message"]
            await assert_closed(extra)
            # Receivers open nothing, so they are not capped by it.
            receiver, joined = await join(session, server, "receiver", "1-a")
            assert joined["peer_present"] is True
            assert server.rooms_by_address == {"127.0.0.1": 2}
            # A sender rejoining its open room (C.5) opens nothing.
            await first.close()
            rejoined, joined = await join(session, server, "sender", "1-a")
            assert joined["peer_present"] is True
            # An expired room still counts while its pair is in it; it is freed when they leave.
            await wait_for_open_rooms(server, 0)
            await assert_closed(second)  # waited alone: disconnected at expiry
            await rooms_settle(server, {"127.0.0.1": 1})
            fourth, joined = await join(session, server, "sender", "4-d")
            assert joined["t"] == "joined", "the lonely room closed, so one is free"
            for ws in (rejoined, receiver, fourth):
                await ws.close()
            await rooms_settle(server, {})

    run(scenario)


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        (None, "unknown"),
    ],
)
def test_failed_joins_count_ipv6_clients_by_64_prefix(remote: str | None, key: str) -> None:
    assert server_module._address_key(remote) == key


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        '{"t": "hello"}',
        '{"room": "1-a-b", "role": "sender"}',
        '{"t": "join", "room": "1-a-b"}',
        '{"t": "join", "room": "1-a-b", "role": "spectator"}',
        '{"t": "join", "room": 7, "role": "sender"}',
        '{"t": "join", "room": "   ", "role": "sender"}',
        '{"t": "join", "room": "1-a-b", "role": "sender", "extra": 1}',
        '{"t": "signal", "data": {"type": "offer", "sdp": "v=0"}}',  # before join
    ],
)
def test_garbage_before_join_is_a_bad_message(frame: str) -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            ws = await session.ws_connect(server.url)
            await ws.send_str(frame)
            await assert_refused(ws, "bad_message")

    run(scenario)


@pytest.mark.parametrize(
    "frame",
    [
        '{"t": "signal", "data": [1, 2]}',
        '{"t": "signal", "data": "offer"}',
        '{"t": "signal", "data": {"file": "c2VjcmV0"}}',
        '{"t": "signal", "data": {"type": "offer"}}',
        '{"t": "signal", "data": {"type": "chunk", "sdp": "x"}}',
        '{"t": "signal", "data": {"candidate": 5}}',
        '{"t": "signal", "data": {}, "to": "receiver"}',
        '{"t": "join", "room": "1-a-b", "role": "sender"}',  # second join on one socket
    ],
)
def test_anything_but_signaling_after_join_is_a_bad_message(frame: str) -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            sender, receiver = await pair(session, server)
            await sender.send_str(frame)
            await assert_refused(sender, "bad_message")
            assert await receive(receiver) == {"t": "peer", "role": "sender", "event": "left"}
            assert server.stats["relayed_messages"] == 0

    run(scenario)


def test_binary_frames_are_a_bad_message() -> None:
    async def scenario() -> None:
        async with serving() as (server, session):
            ws = await session.ws_connect(server.url)
            await ws.send_bytes(b'{"t": "join", "room": "1-a-b", "role": "sender"}')
            await assert_refused(ws, "bad_message")

    run(scenario)


# -- client -------------------------------------------------------------------------


def test_client_round_trip() -> None:
    async def scenario() -> None:
        async with (
            SignalingServer() as server,
            SignalingClient() as sender,
            SignalingClient() as receiver,
        ):
            await sender.connect(server.url)
            joined = await sender.join(CODE, "sender")
            assert joined.peer_present is False
            await receiver.connect(server.url)
            assert (await receiver.join(CODE.upper(), "receiver")).peer_present is True
            await receiver.wait_peer(timeout=5)  # returns at once: peer_present
            await sender.wait_peer(timeout=5)  # consumes `peer joined`
            await sender.send_signal(OFFER)
            assert await receiver.receive(timeout=5) == Signal(data=OFFER)
            await receiver.send_signal(ANSWER)
            await receiver.send_signal(END_OF_CANDIDATES)
            assert await sender.receive(timeout=5) == Signal(data=ANSWER)
            assert await sender.receive(timeout=5) == Signal(data=END_OF_CANDIDATES)
            await receiver.close()
            assert await sender.receive(timeout=5) == Peer(role="receiver", event="left")
            assert sender.peer_present is False

    run(scenario)


def test_client_wait_peer_waits_for_a_rejoin() -> None:
    async def scenario() -> None:
        async with SignalingServer() as server, aiohttp.ClientSession() as session:
            raw_sender, _ = await join(session, server, "sender")
            async with SignalingClient(session=session) as receiver:
                await receiver.connect(server.url)
                await receiver.join(CODE, "receiver")
                await raw_sender.close()
                assert await receiver.receive(timeout=5) == Peer(role="sender", event="left")
                waiting = asyncio.ensure_future(receiver.wait_peer(timeout=5))
                await asyncio.sleep(0.1)
                assert not waiting.done()
                raw_sender, _ = await join(session, server, "sender")
                await send(raw_sender, {"t": "signal", "data": OFFER})
                await waiting
                assert await receiver.receive(timeout=5) == Signal(data=OFFER)
            assert not session.closed  # a borrowed session is left to its owner

    run(scenario)


def test_client_errors() -> None:
    async def scenario() -> None:
        async with SignalingServer() as server:
            url = server.url
            async with SignalingClient() as client:
                await client.connect(url)
                with pytest.raises(SignalingError) as refused:
                    await client.join(CODE, "receiver")
                assert refused.value.code == "unknown_room"
                with pytest.raises(SignalingError) as closed:
                    await client.receive(timeout=5)
                assert closed.value.code == "closed"
            async with SignalingClient() as client:
                await client.connect(server.url)
                await client.join(CODE, "sender")
                await server.close()
                with pytest.raises(SignalingError) as closed:
                    await client.receive(timeout=5)
                assert closed.value.code == "closed"
            async with SignalingClient() as client:
                with pytest.raises(SignalingError) as unreachable:
                    await client.connect(url)  # closed above: nobody listens
                assert unreachable.value.code == "connect_failed"

    run(scenario)


# -- console entry ---------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_console_entry_serves_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    async def scenario() -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.cli.signal_server", "--port", "0",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
            prefix = "signaling server listening on ws://127.0.0.1:"
            assert line.startswith(prefix) and line.endswith("/ws\n"), line
            http = line.split()[-1].replace("ws://", "http://").removesuffix("/ws")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{http}/healthz") as response:
                    assert response.status == 200
                    assert await response.text() == "ok"
                ws = await session.ws_connect(line.split()[-1])
                await send(ws, {"t": "join", "room": CODE, "role": "sender"})
                assert (await receive(ws))["t"] == "joined"
                proc.send_signal(stop_signal)
                await assert_closed(ws)  # clients are told, not dropped
            _, stderr = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0, stderr.decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(scenario)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--port", "http"], "argument --port: not a port number: 'http'"),
        (["--port", "70000"], "argument --port: port out of range: 70000"),
        (["--room-ttl", "0"], "argument --room-ttl: must be a positive number of seconds: 0"),
        (["--room-ttl", "soon"], "argument --room-ttl: not a number of seconds: 'soon'"),
        (["--join-deadline", "-1"], "argument --join-deadline: must be a positive number of seconds: -1"),
        (["--max-rooms-per-address", "0"], "argument --max-rooms-per-address: must be at least 1: 0"),
        (["--max-rooms-per-address", "many"], "argument --max-rooms-per-address: not a whole number: 'many'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_console_entry_usage_errors_are_one_line_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        signal_server.main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"pipeline-signal: error: {says} (see pipeline-signal --help)"]
