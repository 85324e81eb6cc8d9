"""A minimal standalone aiortc peer for the network lab (tests/integration/test_netlab.py).

Signaling is two files in a shared directory: the offering side writes
``offer.sdp`` (complete, after gathering), the answering side reads it and
writes ``answer.sdp``; both processes see the same filesystem.  Once the
DataChannel opens, the offerer sends ``ping`` and the answerer echoes
``pong``, so "connected" means data crossed the lab both ways.

Prints one JSON object: the outcome and what ``ice_probe`` saw (candidate
types, STUN, whether the peer's checks arrived, the selected pair, the NAT's
mapping behaviour against two STUN addresses) and, without a route, the
diagnosis.  Everything is read before ``pc.close()``, which clears it.

    python tests/netlab_peer.py --role offer --exchange DIR --stun stun:198.51.100.10:3478
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("offer", "answer"), required=True)
    parser.add_argument("--exchange", type=Path, required=True, help="shared directory")
    parser.add_argument("--stun", default="", help="stun:HOST:PORT, empty for none")
    parser.add_argument("--deadline", type=float, default=8.0, help="seconds for ICE")
    parser.add_argument("--retry-max", type=int, default=None, help="aioice.stun.RETRY_MAX")
    parser.add_argument(
        "--probe-nat", action="append", default=[], metavar="HOST:PORT",
        help="STUN address for the NAT mapping probe (give two)",
    )  # fmt: skip
    return parser.parse_args(argv)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_file(path: Path, deadline: float) -> str | None:
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        await asyncio.sleep(0.02)
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aioice.stun

    if args.retry_max is not None:
        aioice.stun.RETRY_MAX = args.retry_max

    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    from pipeline.connection import ice_probe
    from pipeline.connection.diagnostics import explain_no_route

    started = time.monotonic()
    report: dict[str, Any] = {"role": args.role, "state": "timeout", "echo": False}
    nat_mapping = None
    if args.probe_nat:
        servers = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in args.probe_nat)]
        nat_mapping = await ice_probe.probe_nat_mapping(servers, timeout=1.5)
        report["nat_mapping"] = nat_mapping.to_dict()

    servers_cfg = [RTCIceServer(args.stun)] if args.stun else []
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers_cfg))
    loop = asyncio.get_running_loop()
    opened = asyncio.Event()
    ice_failed = asyncio.Event()
    echoed: asyncio.Future[str] = loop.create_future()
    channels: list[Any] = []

    def on_state() -> None:
        if pc.iceConnectionState == "failed" or pc.connectionState in ("failed", "closed"):
            ice_failed.set()

    pc.on("iceconnectionstatechange", on_state)
    pc.on("connectionstatechange", on_state)

    def attach(channel: Any) -> None:
        channels.append(channel)

        def on_message(message: object) -> None:
            if args.role == "answer" and message == "ping":
                channel.send("pong")
            if not echoed.done():
                echoed.set_result(str(message))

        channel.on("message", on_message)
        channel.on("open", opened.set)
        if channel.readyState == "open":
            opened.set()

    deadline = started + args.deadline + 5.0  # signaling + gathering + ICE
    try:
        if args.role == "offer":
            attach(pc.createDataChannel("lab"))
            ice_probe.watch(pc)
            await pc.setLocalDescription(await pc.createOffer())
            report["buffers_set"] = ice_probe.set_receive_buffer(pc)
            write_atomic(args.exchange / "offer.sdp", pc.localDescription.sdp)
            answer = await wait_file(args.exchange / "answer.sdp", deadline)
            if answer is None:
                report["state"] = "no_answer"
                return report
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        else:
            pc.on("datachannel", attach)
            offer = await wait_file(args.exchange / "offer.sdp", deadline)
            if offer is None:
                report["state"] = "no_offer"
                return report
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            ice_probe.watch(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            report["buffers_set"] = ice_probe.set_receive_buffer(pc)
            write_atomic(args.exchange / "answer.sdp", pc.localDescription.sdp)
        report["gathered_s"] = round(time.monotonic() - started, 3)
        report["remote_sdp_types"] = ice_probe.sdp_candidate_types(
            pc.remoteDescription.sdp if pc.remoteDescription else ""
        )

        ice_deadline = time.monotonic() + args.deadline
        waiters = [asyncio.ensure_future(opened.wait()), asyncio.ensure_future(ice_failed.wait())]
        await asyncio.wait(waiters, timeout=args.deadline, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if opened.is_set():
            report["state"] = "connected"
            report["connected_s"] = round(time.monotonic() - started, 3)
            # Read now: once the offerer closes, aiortc tears this side down and
            # its candidate lists empty (seen as a flaky [] under load).
            # The controlled side may see the channel open a moment before its
            # agent records the nomination.
            for _ in range(50):
                if ice_probe.selected_pair(pc) is not None:
                    break
                await asyncio.sleep(0.02)
            at_connect = ice_probe.observe(pc)
            # Measure before the ping/pong: the offerer closes right after it.
            report["rtt_measured_ms"] = await ice_probe.measure_rtt(pc)
            report["selected_pair"] = ice_probe.selected_pair(pc)
            if args.role == "offer":
                channels[0].send("ping")
            with contextlib.suppress(TimeoutError):
                reply = await asyncio.wait_for(echoed, max(1.0, ice_deadline - time.monotonic()))
                report["echo"] = reply == ("pong" if args.role == "offer" else "ping")
        elif ice_failed.is_set():
            report["state"] = "failed"
        report["elapsed_s"] = round(time.monotonic() - started, 3)

        symmetric = nat_mapping.symmetric if nat_mapping is not None else None
        observation = ice_probe.observe(pc, local_symmetric_nat=symmetric)
        if opened.is_set() and not observation.local_types:
            observation = dataclasses.replace(
                observation,
                local_types=at_connect.local_types,
                remote_types=observation.remote_types or at_connect.remote_types,
                stun_answered=at_connect.stun_answered,
            )
        report.update(
            local_types=observation.local_types,
            remote_types=observation.remote_types,
            stun_answered=observation.stun_answered,
            checks_from_peer=observation.checks_from_peer,
            our_checks_answered=observation.our_checks_answered,
            incoming_check_sources=ice_probe.incoming_check_sources(pc),
            selected_pair=ice_probe.selected_pair(pc) or report.get("selected_pair"),
            pair_states=ice_probe.pair_states(pc),
            observation=observation.to_dict(),
        )
        if report["state"] != "connected":
            report["diagnosis"] = explain_no_route(observation).to_dict()
        if report["state"] == "connected" and args.role == "answer":
            # Let the offerer read its pong before this side goes away.
            await asyncio.sleep(0.3)
        return report
    finally:
        for channel in channels:
            channel.close()
        await pc.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        report = uvloop.run(run(args))
    except Exception as exc:  # the test reads the report, so report the crash too
        report = {"role": args.role, "state": "crashed", "error": repr(exc)}
    print(json.dumps(report), flush=True)
    return 0 if report["state"] == "connected" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
