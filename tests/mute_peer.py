"""A peer that connects and then does not play along: for the handshake watchdog tests.

It joins the signaling room like the real CLI, opens a real aiortc connection and
DataChannel (``xfer``, ``xfer/1``), then stays silent, or says ``hello`` and stays
silent (a sender that never sends its manifest). It answers ICE consent checks the
whole time, so the link itself stays up: only the application is mute. Runs until
it is killed; prints ``channel open`` on stdout once the channel is up.

    PYTHONPATH=. python -m tests.mute_peer --role receiver --signal ws://127.0.0.1:PORT/ws --code CODE [--hello]
"""

from __future__ import annotations

import argparse
import asyncio

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from pipeline.connection.peer import LABEL, LOCAL_MAX_MESSAGE_SIZE, SUBPROTOCOL
from pipeline.protocol.frames import PROTOCOL_VERSION, Hello, encode_control
from pipeline.signaling import Signal
from pipeline.signaling.client import SignalingClient


async def next_signal(client: SignalingClient, kind: str) -> dict[str, object]:
    while True:
        event = await client.receive()
        if isinstance(event, Signal) and event.data.get("type") == kind:
            return event.data


async def main(args: argparse.Namespace) -> None:
    client = SignalingClient()
    await client.connect(args.signal)
    await client.join(args.code, args.role)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    opened = asyncio.Event()
    channels: list[RTCDataChannel] = []

    def adopt(channel: RTCDataChannel) -> None:
        channels.append(channel)
        channel.on("open", opened.set)
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
    if args.hello:
        hello = Hello(v=PROTOCOL_VERSION, role=args.role, session=args.code, max_message_size=LOCAL_MAX_MESSAGE_SIZE)
        channels[0].send(encode_control(hello))
    print("channel open", flush=True)
    await asyncio.Event().wait()  # silent until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("sender", "receiver"), required=True)
    parser.add_argument("--signal", required=True)
    parser.add_argument("--code", required=True)
    parser.add_argument("--hello", action="store_true", help="say hello, then nothing")
    asyncio.run(main(parser.parse_args()))
