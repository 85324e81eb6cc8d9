"""One end of a raw aiortc DataChannel, as its own program, for the network lab.

The ceiling (``bench/raw_channel.py``) signals through ``multiprocessing`` pipes,
so its peers cannot run in the lab's network namespaces. This program can: start
``--role send`` in one namespace and ``--role receive`` in the other, both with
the same ``--exchange`` directory (the namespaces share the filesystem)::

    send (offerer)                        receive (answerer)
      write offer.sdp  ───── files ─────►  read offer.sdp
      read answer.sdp  ◄──── files ──────  write answer.sdp
      ══ DataChannel "xfer": --bytes in --message-size messages ══►  count bytes
      ◄────────────── "done" on the same channel ─────────────────  (all counted)
      dc.close(), pc.close()                                        pc.close()

The channel has the pipeline's label, subprotocol and options; the sender uses
the pipeline's backpressure rule and message size (defaults from
``pipeline/config.py``) and both raise the ICE sockets' receive buffer as the
pipeline does (:mod:`bench.raw_channel` helpers). ICE uses ``--stun`` only
(no TURN). No files, hashing or protocol frames.

Each side prints one JSON line. The receiver's is the measurement: ``data_s``
from the channel opening on its side to the last byte counted, and the rate over
it; also first byte → last byte and the steady rate between 10 % and 90 % of the
bytes (as the ceiling measures). ``t_open``/``t_last`` are ``time.monotonic``,
which all namespaces share.

    python -m bench.lab_raw_peer --role send --exchange DIR --bytes 8MiB --stun stun:198.51.100.10:3478
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.raw_channel import (
    ReceiveCounter,
    new_peer_connection,
    raise_receive_buffer,
    send_with_backpressure,
)
from bench.series import second_half_rate
from pipeline.config import Config
from pipeline.units import parse_size

DONE = "done"  # receiver -> sender on the data channel: every byte was counted
# sender -> receiver, first message: when the channel opened on the sender's side. The
# receiver measures from there to its last byte, as the ceiling does; time.monotonic is
# one clock for every namespace of the lab (same machine, no time namespace).
OPENED = "sender_open"
POLL = 0.02


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m bench.lab_raw_peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("send", "receive"), required=True)
    parser.add_argument("--exchange", type=Path, required=True, help="directory shared by both sides")
    parser.add_argument("--bytes", type=parse_size, required=True, help="bytes to send / expect (e.g. 8MiB)")
    parser.add_argument("--stun", action="append", default=[], help="stun:HOST:PORT (repeatable; none: host only)")
    parser.add_argument("--message-size", type=parse_size, default=defaults.transfer.chunk_size)
    parser.add_argument("--buffered-high", type=parse_size, default=defaults.channel.buffered_high)
    parser.add_argument("--buffered-low", type=parse_size, default=defaults.channel.buffered_low)
    parser.add_argument(
        "--flight-cap", default=str(defaults.channel.flight_cap), help="auto (as the pipeline), off, or bytes"
    )
    parser.add_argument("--connect-timeout", type=float, default=defaults.ice.connect_timeout, help="seconds to an open channel")
    parser.add_argument("--idle-timeout", type=float, default=45.0, help="receiver: give up after this long without a new byte")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds in all")
    return parser.parse_args(argv)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _wait_file(path: Path, deadline: float) -> str:
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} from the other side")
        await asyncio.sleep(POLL)
    return path.read_text()


async def _wait(event: asyncio.Event, timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), max(0.0, timeout))
    except TimeoutError:
        raise TimeoutError(what) from None


def _watch(pc: Any) -> None:
    """Record ICE check RTTs, so the report can name the path's RTT. Once the ICE
    transport exists: after createDataChannel (offerer) or setRemoteDescription."""
    from pipeline.connection import ice_probe

    ice_probe.watch(pc)


def _rtt_ms(pc: Any) -> float | None:
    from pipeline.connection import ice_probe

    pair = ice_probe.selected_pair(pc)
    return None if pair is None else pair["rtt_ms"]


async def _cap_flight(pc: Any, setting: str) -> int | None:
    """The SCTP flight cap as the pipeline's sender sets it (``auto``: from the RTT
    of one consent check right after connecting), so raw and pipeline compare alike."""
    from pipeline.connection import ice_probe, sctp_flight

    value: str | int = setting if setting in ("auto", "off") else parse_size(setting)
    with contextlib.suppress(Exception):
        await ice_probe.measure_rtt(pc)
    rtt_ms = _rtt_ms(pc)
    return sctp_flight.set_cap(pc, sctp_flight.resolve(value, None if rtt_ms is None else rtt_ms / 1000))


async def send(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from aiortc import RTCSessionDescription

    from pipeline.connection.peer import LABEL, SUBPROTOCOL

    started = time.monotonic()
    channel_cfg = Config().channel
    pc = new_peer_connection(args.stun)
    try:
        channel = pc.createDataChannel(
            LABEL,
            ordered=channel_cfg.ordered,
            maxRetransmits=channel_cfg.max_retransmits,
            maxPacketLifeTime=channel_cfg.max_packet_life_time,
            protocol=SUBPROTOCOL,
        )
        _watch(pc)
        opened, closed, acknowledged = asyncio.Event(), asyncio.Event(), asyncio.Event()
        channel.on("open", opened.set)
        channel.on("close", closed.set)

        def on_message(message: bytes | str) -> None:
            if message == DONE:
                acknowledged.set()

        channel.on("message", on_message)
        channel.on("close", acknowledged.set)  # never wait for a confirmation that cannot come
        await pc.setLocalDescription(await pc.createOffer())
        raise_receive_buffer(pc)
        _write_atomic(args.exchange / "offer.sdp", pc.localDescription.sdp)
        deadline = started + args.connect_timeout
        answer = await _wait_file(args.exchange / "answer.sdp", deadline)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await _wait(opened, deadline - time.monotonic(), "the channel did not open")
        t_open = time.monotonic()
        report.update(setup_s=round(t_open - started, 3), t_open=t_open, flight_cap=await _cap_flight(pc, args.flight_cap))
        report["rtt_ms"] = _rtt_ms(pc)
        channel.send(json.dumps({OPENED: t_open}))  # a str message: the receiver does not count it
        await send_with_backpressure(channel, args.bytes, args.message_size, args.buffered_high, args.buffered_low)
        report["sent"] = args.bytes
        await acknowledged.wait()  # the receiver's idle deadline and --timeout bound this
        if closed.is_set():
            raise ConnectionError("the channel closed before the receiver confirmed")
        t_done = time.monotonic()
        report.update(data_s=round(t_done - t_open, 3), outcome="completed")
        channel.close()  # dc.close() before pc.close(): pc.close() alone drops queued data
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), 5)
    finally:
        await pc.close()


async def receive(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from aiortc import RTCSessionDescription

    started = time.monotonic()
    counter = ReceiveCounter(args.bytes)
    channels: list[Any] = []
    opened, closed = asyncio.Event(), asyncio.Event()
    opened_at: list[float] = []

    sender_open: list[float] = []

    def on_message(message: bytes | str) -> None:
        if isinstance(message, str):
            sender_open.append(float(json.loads(message)[OPENED]))
        else:
            counter.on_message(message)

    def adopt(channel: Any) -> None:
        # aiortc announces the channel once it is open on this side.
        opened_at.append(time.monotonic())
        channels.append(channel)
        channel.on("message", on_message)
        channel.on("close", closed.set)
        opened.set()

    pc = new_peer_connection(args.stun)
    pc.on("datachannel", adopt)
    try:
        deadline = started + args.connect_timeout
        offer = await _wait_file(args.exchange / "offer.sdp", deadline)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        _watch(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        raise_receive_buffer(pc)
        _write_atomic(args.exchange / "answer.sdp", pc.localDescription.sdp)
        await _wait(opened, deadline - time.monotonic(), "the channel did not open")
        t_open = opened_at[0]
        report.update(setup_s=round(t_open - started, 3), t_open=t_open, rtt_ms=_rtt_ms(pc))
        await _wait_counted(counter, args.idle_timeout)
        assert counter.t_last is not None and counter.first is not None
        t_last, (t_first, first_bytes) = counter.t_last, counter.first
        # Under loss the two sides see the channel open seconds apart (a lost DCEP
        # message waits for SCTP's 3 s initial RTO); data flows from the sender's open.
        t_start = sender_open[0] if sender_open else t_open
        data_s = t_last - t_start
        report.update(
            outcome="completed",
            received=counter.count,
            sender_open=t_start if sender_open else None,
            t_last=t_last,
            data_s=round(data_s, 3),
            bytes_per_s=round(counter.count / data_s, 1) if data_s > 0 else None,
            first_to_last_s=round(t_last - t_first, 3),
            first_to_last_bytes_per_s=(
                round((counter.count - first_bytes) / (t_last - t_first), 1) if t_last > t_first else None
            ),
            steady_bytes_per_s=round(counter.steady_bytes_per_s, 1),
            second_half_bytes_per_s=second_half_rate(counter.series, args.bytes),
        )
        channels[0].send(DONE)
        # Stay until the sender closes the channel: our pc.close() would race its close.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), 5)
    finally:
        report.setdefault("received", counter.count)
        await pc.close()


async def _wait_counted(counter: ReceiveCounter, idle_timeout: float) -> None:
    """Until every byte is counted; TimeoutError after ``idle_timeout`` s without a new one."""
    last_count, last_change = -1, time.monotonic()
    while not counter.done.is_set():
        now = time.monotonic()
        if counter.count != last_count:
            last_count, last_change = counter.count, now
        elif now - last_change > idle_timeout:
            raise TimeoutError(f"no new byte for {idle_timeout:.0f} s at {counter.count} bytes")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.done.wait(), 1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"role": args.role, "bytes": args.bytes, "message_size": args.message_size, "outcome": "failed"}
    run = send if args.role == "send" else receive
    try:
        import uvloop

        uvloop.run(asyncio.wait_for(run(args, report), args.timeout))
    except Exception as exc:  # the bench reads the report: a crash is reported, not raised
        report["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report), flush=True)
    return 0 if report["outcome"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
