"""A peer that connects and then does not play along: for tests of the real CLIs.

It joins the signaling room like the real CLI and opens a real aiortc connection
and DataChannel (``xfer``, ``xfer/1``); then, by ``--act``:

* ``mute``: says nothing at all;
* ``hello``: (sender) says hello, then never sends its manifest;
* ``manifest``: (sender) offers one file named ``--path`` (a hostile name);
* ``corrupt``: (sender) sends ``good.bin`` honestly and ``bad.bin`` with a
  ``file_end`` digest that does not match the bytes it sent, then ``done``;
* ``vanish``: (receiver) accepts, receives and verifies every file like a real
  receiver, but on ``done`` closes the connection and leaves the room without
  sending ``done_ack`` (as if the cut took it), then exits.

It answers ICE consent checks throughout, so the link stays up whatever the
application does. It prints ``joined the room``, ``channel open``, then every control frame it
receives as one JSON line (``{"frame": {...}}``), on stdout, and runs until it
is killed (or, after ``done_ack``/``error``/``cancel``/``reject``, a moment later).

    PYTHONPATH=. python -m tests.rogue_peer --role sender --act corrupt --signal URL --code CODE
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from typing import Any

import msgspec
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from pipeline.connection.peer import LABEL, LOCAL_MAX_MESSAGE_SIZE, SUBPROTOCOL
from pipeline.protocol.frames import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    ControlFrame,
    Done,
    FileEnd,
    FileEntry,
    FileResult,
    Hello,
    Manifest,
    decode_control,
    decode_data,
    encode_control,
    encode_data,
)
from pipeline.signaling import Signal
from pipeline.signaling.client import SignalingClient

CHUNK = 65536
GOOD = b"good bytes, " * 100  # 1,200 bytes: one chunk each
BAD = b"bad bytes!! " * 100
CLAIMED = hashlib.sha256(b"what the manifest promised" * 46).hexdigest()  # not BAD's digest
ENDINGS = ("done_ack", "error", "cancel", "reject")


async def next_signal(client: SignalingClient, kind: str) -> dict[str, Any]:
    while True:
        event = await client.receive()
        if isinstance(event, Signal) and event.data.get("type") == kind:
            return event.data


async def connect(args: argparse.Namespace, frames: asyncio.Queue[ControlFrame]) -> tuple[RTCPeerConnection, RTCDataChannel]:
    client = SignalingClient()
    await client.connect(args.signal)
    await client.join(args.code, args.role)
    print("joined the room", flush=True)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    opened = asyncio.Event()
    channels: list[RTCDataChannel] = []

    def adopt(channel: RTCDataChannel) -> None:
        channels.append(channel)
        channel.on("open", opened.set)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                frame = decode_control(message)
                print(json.dumps({"frame": msgspec.to_builtins(frame)}), flush=True)
                frames.put_nowait(frame)

        if channel.readyState == "open":
            opened.set()

    if args.role == "sender":
        await client.wait_peer()
        adopt(pc.createDataChannel(LABEL, protocol=SUBPROTOCOL))
        await pc.setLocalDescription(await pc.createOffer())
        await client.send_signal({"type": "offer", "sdp": pc.localDescription.sdp})
        answer = await next_signal(client, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=str(answer["sdp"]), type="answer"))
    else:
        pc.on("datachannel", adopt)
        offer = await next_signal(client, "offer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=str(offer["sdp"]), type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await client.send_signal({"type": "answer", "sdp": pc.localDescription.sdp})
    await opened.wait()
    print("channel open", flush=True)
    return pc, channels[0]


async def expect(frames: asyncio.Queue[ControlFrame], kind: type) -> ControlFrame:
    while True:
        frame = await frames.get()
        if isinstance(frame, kind):
            return frame


async def act(args: argparse.Namespace, channel: RTCDataChannel, frames: asyncio.Queue[ControlFrame]) -> None:
    if args.act == "mute":
        return
    hello = Hello(v=PROTOCOL_VERSION, role=args.role, session=args.code, max_message_size=LOCAL_MAX_MESSAGE_SIZE)
    channel.send(encode_control(hello))
    if args.act == "hello":
        return
    await expect(frames, Hello)
    if args.act == "vanish":
        await receive_all_then_vanish(channel, frames)
        return
    if args.act == "manifest":
        files = [FileEntry(id=0, path=args.path, size=len(GOOD))]
    else:
        files = [FileEntry(id=0, path="good.bin", size=len(GOOD)), FileEntry(id=1, path="bad.bin", size=len(BAD))]
    total = sum(f.size for f in files)
    manifest = Manifest(part=0, last=True, chunk_size=CHUNK, total_files=len(files), total_bytes=total, files=files)
    channel.send(encode_control(manifest))
    await expect(frames, Accept)
    await asyncio.sleep(args.delay)  # a sender busy opening and reading its files
    for seq, payload in enumerate((GOOD, BAD)):
        channel.send(encode_data(seq, 0, seq, True, payload))
    channel.send(encode_control(FileEnd(id=0, size=len(GOOD), chunks=1, sha256=hashlib.sha256(GOOD).hexdigest())))
    channel.send(encode_control(FileEnd(id=1, size=len(BAD), chunks=1, sha256=CLAIMED)))
    channel.send(encode_control(Done(files=2, bytes=total)))


async def receive_all_then_vanish(channel: RTCDataChannel, frames: asyncio.Queue[ControlFrame]) -> None:
    """A receiver that does everything right up to ``done``, then is gone."""
    manifest = await expect(frames, Manifest)
    assert isinstance(manifest, Manifest) and manifest.last, "one-part manifests only"
    hashers = {entry.id: hashlib.sha256() for entry in manifest.files}

    def on_data(message: str | bytes) -> None:
        if isinstance(message, bytes):
            frame = decode_data(message)
            hashers[frame.file_id].update(frame.payload)  # an ordered channel: in order
            channel.send(encode_control(Ack(cum=frame.seq + 1)))

    channel.on("message", on_data)
    channel.send(encode_control(Accept(window=64)))
    while True:
        frame = await frames.get()
        if isinstance(frame, FileEnd):
            digest = hashers[frame.id].hexdigest()
            status = "verified" if digest == frame.sha256 else "mismatch"
            channel.send(encode_control(FileResult(id=frame.id, status=status, sha256=digest)))
        elif isinstance(frame, Done):
            return


async def main(args: argparse.Namespace) -> None:
    frames: asyncio.Queue[ControlFrame] = asyncio.Queue()
    ending = asyncio.Event()
    pc, channel = await connect(args, frames)
    channel.on("message", lambda m: ending.set() if isinstance(m, str) and json.loads(m).get("t") in ENDINGS else None)
    await act(args, channel, frames)
    if args.act == "vanish":
        await pc.close()
        print("vanished", flush=True)
        return  # the process ends: its signaling socket closes and the room says it left
    await ending.wait()
    await asyncio.sleep(1.0)  # let the peer close first
    await pc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("sender", "receiver"), required=True)
    parser.add_argument("--act", choices=("mute", "hello", "manifest", "corrupt", "vanish"), default="mute")
    parser.add_argument("--path", default="", help="the file name --act manifest offers")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between accept and the first DATA")
    parser.add_argument("--signal", required=True)
    parser.add_argument("--code", required=True)
    asyncio.run(main(parser.parse_args()))
