"""The ceiling: a bare aiortc DataChannel between two processes, nothing else.

Two ``spawn``ed processes (like the pipeline's connection processes), each on
uvloop with one ``RTCPeerConnection`` (host candidates only, the same enlarged
UDP receive buffer as the pipeline). Signaling is a ``multiprocessing`` pipe
through the parent. The sender sends ``total_bytes`` as ``message_size``-byte
messages with the pipeline's backpressure rule: send while ``bufferedAmount``
is below ``buffered_high``, then wait for ``bufferedamountlow`` (threshold
``buffered_low``). The receiver only counts bytes. No files, no hashing, no
shared memory, no protocol frames: what is left is the best this stack does on
this machine::

    parent ──(offer/answer over pipes)──► sender, receiver
    sender ══ DataChannel ══► receiver ──(timestamps, CPU)──► parent ──(finish)──► sender

Also here, as the ceiling's own baseline, :func:`run_tcp_loopback`: the same two
processes and messages over a TCP loopback socket (the kernel's ceiling).

Run alone: ``python -m bench.raw_channel --bytes 64MiB``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from pipeline.telemetry import ProcessSampler
from pipeline.units import format_rate, parse_size

SERIES_STEP = 0.25  # seconds between receiver progress points
SCTP_PROBE_STEP = 1.0  # seconds between samples of the sender's SCTP state
MEMORY_INTERVAL = 0.5
LOW_MARK, HIGH_MARK = 0.1, 0.9  # steady-state rate is measured between these fractions


@dataclass
class RawResult:
    """One ceiling measurement. Times are ``time.monotonic`` (system-wide on Linux)."""

    transport: str  # "aiortc" or "tcp"
    total_bytes: int
    message_size: int
    setup_s: float  # processes spawned -> channel open
    data_s: float  # channel open -> last byte counted by the receiver
    steady_bytes_per_s: float  # between LOW_MARK and HIGH_MARK of the bytes
    cpu_s: dict[str, float]  # whole process (imports and setup included), per role
    cpu_data_s: dict[str, float]  # only while data flowed
    peak_pss: dict[str, int]
    peak_sum_pss: int
    series: list[tuple[float, int]] = field(default_factory=list)  # (s since open, bytes)
    # (s since open, cwnd, flight bytes, sent-queue chunks) of the sender's SCTP association
    sctp: list[tuple[float, int, int, int]] = field(default_factory=list)

    @property
    def bytes_per_s(self) -> float:
        return self.total_bytes / self.data_s if self.data_s > 0 else 0.0

    @property
    def end_to_end_bytes_per_s(self) -> float:
        total = self.setup_s + self.data_s
        return self.total_bytes / total if total > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bytes_per_s"] = round(self.bytes_per_s, 1)
        data["end_to_end_bytes_per_s"] = round(self.end_to_end_bytes_per_s, 1)
        data["cpu_s_per_gb"] = {role: round(cpu / (self.total_bytes / 1e9), 2) for role, cpu in self.cpu_s.items()}
        return data


# -- the two peers (run in spawned processes) --------------------------------------


def _peer_main(role: str, conn: Connection, params: dict[str, Any]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    coro = _sender(conn, params) if role == "sender" else _receiver(conn, params)
    try:
        asyncio.run(coro)
    except BaseException as exc:  # the parent must hear why, not wait for a timeout
        with contextlib.suppress(OSError):
            conn.send(("error", f"{role}: {type(exc).__name__}: {exc}"))
        raise


async def _recv(conn: Connection) -> Any:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(conn.fileno(), ready.set)
    try:
        await ready.wait()
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


def new_peer_connection(stun_servers: Sequence[str] = ()) -> Any:
    """An ``RTCPeerConnection`` with only these STUN servers (none: host candidates only)."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    # [] = host candidates only; None would mean Google's public STUN server.
    return RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(url) for url in stun_servers]))


def raise_receive_buffer(pc: Any) -> None:
    """Same socket setting as the pipeline's peers (see ice_probe.set_receive_buffer);
    call it after ``setLocalDescription``, once the ICE sockets exist."""
    from pipeline.connection import ice_probe

    ice_probe.set_receive_buffer(pc)


async def send_with_backpressure(
    channel: Any, total: int, message_size: int, buffered_high: int, buffered_low: int
) -> None:
    """Send ``total`` bytes on an open channel as ``message_size``-byte messages with the
    pipeline's backpressure rule: send while ``bufferedAmount`` is below ``buffered_high``,
    then wait for ``bufferedamountlow`` (threshold ``buffered_low``). Raises
    ConnectionError if the channel closes meanwhile."""
    channel.bufferedAmountLowThreshold = buffered_low
    drained, closed = asyncio.Event(), asyncio.Event()
    channel.on("bufferedamountlow", drained.set)
    channel.on("close", closed.set)
    channel.on("close", drained.set)  # never wait for a drain that cannot come
    payload = os.urandom(message_size)
    sent = 0
    while sent < total:
        if channel.bufferedAmount >= buffered_high:
            drained.clear()
            if channel.bufferedAmount >= buffered_high:  # re-check: the event may have fired before clear()
                await drained.wait()
            if closed.is_set():
                raise ConnectionError("channel closed while sending")
            continue
        n = min(message_size, total - sent)
        channel.send(payload if n == message_size else payload[:n])
        sent += n


class ReceiveCounter:
    """The receiving side's only work: count bytes. ``on_message`` is the channel's
    ``message`` handler; it keeps a progress point every SERIES_STEP s, the time each
    of LOW_MARK and HIGH_MARK of ``total`` was reached, the first and the last byte, and
    sets ``done`` once ``total`` bytes have arrived. Times are ``time.monotonic``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.series: list[tuple[float, int]] = []
        self.marks: dict[float, tuple[float, int]] = {}
        self.first: tuple[float, int] | None = None  # (time, bytes) of the first message
        self.t_last: float | None = None
        self.done = asyncio.Event()
        self._next_t = 0.0

    def on_message(self, message: bytes | str) -> None:
        now = time.monotonic()
        self.count += len(message)
        count = self.count
        if self.first is None:
            self.first = (now, count)
        if now >= self._next_t or count >= self.total:
            self.series.append((now, count))
            self._next_t = now + SERIES_STEP
        for mark in (LOW_MARK, HIGH_MARK):
            if mark not in self.marks and count >= mark * self.total:
                self.marks[mark] = (now, count)
        if count >= self.total and self.t_last is None:
            self.t_last = now
            self.done.set()

    @property
    def steady_bytes_per_s(self) -> float:
        """Bytes per second between LOW_MARK and HIGH_MARK (0.0 until both are reached)."""
        if LOW_MARK not in self.marks or HIGH_MARK not in self.marks:
            return 0.0
        (t_lo, b_lo), (t_hi, b_hi) = self.marks[LOW_MARK], self.marks[HIGH_MARK]
        return (b_hi - b_lo) / (t_hi - t_lo) if t_hi > t_lo else 0.0


async def _sender(conn: Connection, params: dict[str, Any]) -> None:
    from aiortc import RTCSessionDescription

    pc = new_peer_connection()
    channel = pc.createDataChannel("bench", ordered=True)
    if params.get("cwnd_cap"):
        # The pipeline's own flight cap (pipeline/connection/sctp_flight.py), so that
        # the ceiling runs aiortc the way the pipeline's sender does.
        from pipeline.connection import sctp_flight

        sctp_flight.set_cap(pc, params["cwnd_cap"])
    opened, closed = asyncio.Event(), asyncio.Event()
    channel.on("open", opened.set)
    channel.on("close", closed.set)
    await pc.setLocalDescription(await pc.createOffer())
    raise_receive_buffer(pc)
    conn.send(("offer", pc.localDescription.sdp))
    _, sdp = await _recv(conn)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
    await opened.wait()
    t_open, cpu_open = time.monotonic(), time.process_time()
    conn.send(("open", t_open))
    sctp_series: list[tuple[float, int, int, int]] = []
    probe = asyncio.ensure_future(_probe_sctp(pc, sctp_series))
    await send_with_backpressure(
        channel, params["total_bytes"], params["message_size"], params["buffered_high"], params["buffered_low"]
    )
    await _recv(conn)  # "finish": the receiver has counted everything
    cpu_end = time.process_time()
    probe.cancel()
    channel.close()  # dc.close() before pc.close(): pc.close() alone drops queued data
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed.wait(), 5)
    await pc.close()
    conn.send(("done", {"cpu_s": cpu_end, "cpu_data_s": cpu_end - cpu_open, "sctp": sctp_series}))


async def _probe_sctp(pc: Any, series: list[tuple[float, int, int, int]]) -> None:
    """Every second: (monotonic time, congestion window, bytes in flight, chunks in the sent
    queue). aiortc internals, read with getattr so a renamed field yields -1, not a crash;
    this is a diagnostic only (why per-packet CPU grows over a long transfer)."""
    while True:
        sctp = getattr(pc, "sctp", None)
        series.append(
            (
                time.monotonic(),
                int(getattr(sctp, "_cwnd", -1)),
                int(getattr(sctp, "_flight_size", -1)),
                len(getattr(sctp, "_sent_queue", ())) if sctp is not None else -1,
            )
        )
        await asyncio.sleep(SCTP_PROBE_STEP)


async def _receiver(conn: Connection, params: dict[str, Any]) -> None:
    from aiortc import RTCSessionDescription

    pc = new_peer_connection()
    counter = ReceiveCounter(params["total_bytes"])
    pc.on("datachannel", lambda channel: channel.on("message", counter.on_message))
    _, sdp = await _recv(conn)
    cpu_open = time.process_time()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    raise_receive_buffer(pc)
    conn.send(("answer", pc.localDescription.sdp))
    await counter.done.wait()
    cpu_end = time.process_time()
    report = {
        "t_last": counter.t_last,
        "steady_bytes_per_s": counter.steady_bytes_per_s,
        "series": counter.series,
        "cpu_s": cpu_end,
        "cpu_data_s": cpu_end - cpu_open,
    }
    conn.send(("done", report))
    # Stay until the sender has closed the channel (its pc.close would otherwise race ours).
    await _recv(conn)
    await pc.close()


# -- the parent ---------------------------------------------------------------------


class _MemoryWatch:
    """Samples ``role -> pid`` every MEMORY_INTERVAL s on a thread; keeps peak PSS."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._sampler = ProcessSampler(pids)
        self.peak_pss: dict[str, int] = dict.fromkeys(pids, 0)
        self.peak_sum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._sampler.sample()
            for role, proc in sample.processes.items():
                if not proc.gone:
                    self.peak_pss[role] = max(self.peak_pss[role], proc.pss)
            self.peak_sum = max(self.peak_sum, sample.sum_pss)
            self._stop.wait(MEMORY_INTERVAL)

    def __enter__(self) -> _MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def _owned(processes: list[BaseProcess]) -> Iterator[None]:
    """Every process started here is reaped on every path (killed if it must be)."""
    try:
        yield
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


def _expect(conn: Connection, kind: str, deadline: float) -> Any:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not conn.poll(remaining):
        raise TimeoutError(f"raw channel: no {kind!r} before the deadline")
    try:
        got, value = conn.recv()
    except EOFError:
        raise RuntimeError(f"raw channel: a peer exited before sending {kind!r}") from None
    if got == "error":
        raise RuntimeError(f"raw channel peer failed: {value}")
    if got != kind:
        raise RuntimeError(f"raw channel: expected {kind!r}, got {got!r}")
    return value


def run_raw_channel(
    total_bytes: int,
    *,
    message_size: int = 65536,
    buffered_high: int = 1 << 20,
    buffered_low: int = 256 << 10,
    timeout: float = 600.0,
    on_open: Callable[[dict[str, int]], None] | None = None,
    cwnd_cap: int | None = None,
) -> RawResult:
    """Measure one raw aiortc transfer of ``total_bytes`` between two new processes.

    ``on_open({"sender": pid, "receiver": pid})`` runs in the parent once the channel
    is open (the profiler attaches there); the transfer goes on meanwhile. ``cwnd_cap``
    caps the sender's SCTP flight as the pipeline does (``sctp_flight.set_cap``); None
    measures aiortc as shipped."""
    ctx = multiprocessing.get_context("spawn")
    params = {
        "total_bytes": total_bytes,
        "message_size": message_size,
        "buffered_high": buffered_high,
        "buffered_low": buffered_low,
        "cwnd_cap": cwnd_cap,
    }
    deadline = time.monotonic() + timeout
    s_parent, s_child = ctx.Pipe()
    r_parent, r_child = ctx.Pipe()
    sender = ctx.Process(target=_peer_main, args=("sender", s_child, params), name="raw-sender")
    receiver = ctx.Process(target=_peer_main, args=("receiver", r_child, params), name="raw-receiver")
    t_start = time.monotonic()
    with _owned([sender, receiver]):
        sender.start()
        receiver.start()
        s_child.close()
        r_child.close()
        with _MemoryWatch({"sender": sender.pid or 0, "receiver": receiver.pid or 0}) as memory:
            r_parent.send(("offer", _expect(s_parent, "offer", deadline)))
            s_parent.send(("answer", _expect(r_parent, "answer", deadline)))
            t_open = _expect(s_parent, "open", deadline)
            if on_open is not None:
                on_open({"sender": sender.pid or 0, "receiver": receiver.pid or 0})
            received = _expect(r_parent, "done", deadline)
            s_parent.send(("finish", None))
            sent = _expect(s_parent, "done", deadline)
            r_parent.send(("finish", None))
    result = _result("aiortc", total_bytes, message_size, t_start, t_open, sent, received, memory)
    result.series = [(round(t - t_open, 3), n) for t, n in received["series"]]
    result.sctp = [(round(t - t_open, 3), cwnd, flight, queued) for t, cwnd, flight, queued in sent["sctp"]]
    return result


def _result(
    transport: str,
    total_bytes: int,
    message_size: int,
    t_start: float,
    t_open: float,
    sent: dict[str, Any],
    received: dict[str, Any],
    memory: _MemoryWatch,
) -> RawResult:
    """What both transports report, from the two processes' "done" messages."""
    return RawResult(
        transport=transport,
        total_bytes=total_bytes,
        message_size=message_size,
        setup_s=round(t_open - t_start, 3),
        data_s=round(received["t_last"] - t_open, 4),
        steady_bytes_per_s=round(received["steady_bytes_per_s"], 1),
        cpu_s={"sender": round(sent["cpu_s"], 3), "receiver": round(received["cpu_s"], 3)},
        cpu_data_s={"sender": round(sent["cpu_data_s"], 3), "receiver": round(received["cpu_data_s"], 3)},
        peak_pss=dict(memory.peak_pss),
        peak_sum_pss=memory.peak_sum,
    )


# -- TCP loopback: the kernel's ceiling, as the ceiling's own baseline ----------------


def _tcp_sender(port: int, total: int, size: int, conn: Connection) -> None:
    payload = os.urandom(size)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        t_open, cpu_open = time.monotonic(), time.process_time()
        conn.send(("open", t_open))
        sent = 0
        while sent < total:
            n = min(size, total - sent)
            sock.sendall(payload if n == size else payload[:n])
            sent += n
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the receiver closes once it has counted everything
    conn.send(("done", {"cpu_s": time.process_time(), "cpu_data_s": time.process_time() - cpu_open}))


def _tcp_receiver(listener: socket.socket, total: int, size: int, conn: Connection) -> None:
    sock, _ = listener.accept()
    cpu_open = time.process_time()
    buffer = bytearray(size)
    count, marks = 0, {}
    with sock:
        while count < total:
            n = sock.recv_into(buffer)
            if n == 0:
                break
            count += n
            for mark in (LOW_MARK, HIGH_MARK):
                if mark not in marks and count >= mark * total:
                    marks[mark] = (time.monotonic(), count)
        t_last = time.monotonic()
    (t_lo, b_lo), (t_hi, b_hi) = marks[LOW_MARK], marks[HIGH_MARK]
    conn.send(
        (
            "done",
            {
                "t_last": t_last,
                "steady_bytes_per_s": (b_hi - b_lo) / (t_hi - t_lo) if t_hi > t_lo else 0.0,
                "cpu_s": time.process_time(),
                "cpu_data_s": time.process_time() - cpu_open,
            },
        )
    )


def run_tcp_loopback(total_bytes: int, *, message_size: int = 65536, timeout: float = 120.0) -> RawResult:
    """The same two-process transfer over a TCP loopback socket (forked, no aiortc)."""
    ctx = multiprocessing.get_context("fork")  # the listener socket is inherited
    deadline = time.monotonic() + timeout
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        s_parent, s_child = ctx.Pipe()
        r_parent, r_child = ctx.Pipe()
        receiver = ctx.Process(target=_tcp_receiver, args=(listener, total_bytes, message_size, r_child))
        sender = ctx.Process(target=_tcp_sender, args=(port, total_bytes, message_size, s_child))
        t_start = time.monotonic()
        with _owned([sender, receiver]):
            receiver.start()
            sender.start()
            with _MemoryWatch({"sender": sender.pid or 0, "receiver": receiver.pid or 0}) as memory:
                t_open = _expect(s_parent, "open", deadline)
                received = _expect(r_parent, "done", deadline)
                sent = _expect(s_parent, "done", deadline)
    return _result("tcp", total_bytes, message_size, t_start, t_open, sent, received, memory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_channel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", default="64MiB", help="bytes to send (default 64MiB)")
    parser.add_argument("--message-size", default="64KiB", help="bytes per message (default 64KiB)")
    parser.add_argument("--buffered-high", default="1MiB", help="pause above this bufferedAmount")
    parser.add_argument("--buffered-low", default="256KiB", help="resume at this bufferedAmount")
    parser.add_argument("--tcp", action="store_true", help="TCP loopback instead of aiortc")
    parser.add_argument("--cwnd-cap", help="clamp aiortc's SCTP congestion window like the pipeline (e.g. 256KiB)")
    args = parser.parse_args(argv)
    total, size = parse_size(args.bytes), parse_size(args.message_size)
    if args.tcp:
        result = run_tcp_loopback(total, message_size=size)
    else:
        result = run_raw_channel(
            total,
            message_size=size,
            buffered_high=parse_size(args.buffered_high),
            buffered_low=parse_size(args.buffered_low),
            cwnd_cap=parse_size(args.cwnd_cap) if args.cwnd_cap else None,
        )
    data = result.as_dict()
    data.pop("series")
    sctp = data.pop("sctp")
    if sctp:
        t, cwnd, flight, queued = sctp[-1]
        data["sctp_at_end"] = {"t": t, "cwnd": cwnd, "flight": flight, "sent_queue_chunks": queued}
    print(json.dumps(data, indent=2))
    print(f"{result.transport}: {format_rate(result.bytes_per_s)} (steady {format_rate(result.steady_bytes_per_s)})")


if __name__ == "__main__":
    main()
