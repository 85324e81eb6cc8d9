"""One side's process tree: the connection process, the workers, the ring, and cleanup.

The supervisor is the only owner of every process and of the shared-memory
ring; it starts them with the ``spawn`` method, watches their sentinels, and on
any terminal outcome runs the same cleanup (A.2 rule 2)::

    stop ──► wait (deadline) ──► terminate ──► wait ──► kill ──► reap
    ring: close + unlink (we created it)     receiver: sweep partial files,
                                             remove directories we created and left empty

Pipes (one direction each; ``from_``/``to_`` seen from the connection process)::

    sender:   reader ──ReadChunk──► connection ──ReleaseSlot──► reader
              reader ──ReadChunk──► hasher ─────ReleaseSlot──► reader
              hasher ──FileDigest─► connection
    receiver: connection ──PlanFile/WriteChunk/Finalize/Discard──► writer ──ReleaseSlot/Finalized──► connection
              connection ──HashChunk/HashEnd──► hasher ──ReleaseSlot/FileDigest──► connection
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import msgspec

from pipeline import control
from pipeline.connection.entry import run_connection
from pipeline.offer import OfferCheck, remove_new_dirs
from pipeline.protocol.filetable import FileTable
from pipeline.protocol.frames import DATA_HEADER_LEN
from pipeline.shm_ring import RingSpec, SlotRing
from pipeline.telemetry import TelemetryRecorder
from workers.channel import PipeEnd, watch_readable
from workers.hasher import run_receiver_hasher, run_sender_hasher
from workers.messages import ReaderFile, pack_reader_files
from workers.partials import sweep_partials
from workers.reader import run_reader
from workers.writer import run_writer

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
TERMINATE_GRACE = 2.0
CANCEL_GRACE = 8.0


class Reporter(Protocol):
    def status(self, text: str) -> None: ...
    def connected(self, pair: dict[str, Any] | None, reconnect: bool) -> None: ...
    def progress(self, progress: control.Progress) -> None: ...


@dataclass
class ReceiverPlan:
    out_dir: str
    on_exists: str
    decide: Callable[[control.Offer, FileTable], Awaitable[tuple[bool, str, str, OfferCheck | None]]]
    check: OfferCheck | None = None
    relpaths: Sequence[str] = ()


@dataclass
class SessionResult:
    outcome: str
    code: str | None
    message: str
    by_peer: bool
    diagnostics: dict[str, Any]
    counters: dict[str, int]
    duration: float  # the whole session: connecting, waiting for the peer and the user, transfer
    exitcodes: dict[str, int | None]
    transfer: float = 0.0  # TransferClock: from the receiver's accept to the terminal outcome


class TransferClock:
    """When the transfer ran: from the receiver's accept to the terminal outcome.

    The receiver's supervisor makes the accept decision itself, so its start is
    exact.  The sender's supervisor is not told of the accept; it sees the
    connection's progress reports (every ``TICK``, 0.25 s), and the first one with
    a frame sent or a file verified comes within one tick after the accept.  Its
    start is the report before that one, which still showed nothing: the transfer
    time can come out up to a tick long, never short, so the rate is never
    overstated.  The end is the ``Finished`` report, on both sides.
    """

    def __init__(self, now: float) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self._idle_at = now  # the last moment known to be before the transfer

    def accepted(self, now: float) -> None:
        if self.started is None:
            self.started = now

    def progress(self, now: float, active: bool) -> None:
        if self.started is not None:
            return
        if active:
            self.started = self._idle_at
        else:
            self._idle_at = now

    def finished(self, now: float) -> None:
        if self.ended is None:
            self.ended = now

    def seconds(self, now: float) -> float:
        """The transfer's duration; 0 if it never started (rejected, no route...)."""
        if self.started is None:
            return 0.0
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)


class Supervisor:
    def __init__(
        self,
        params: control.ConnParams,
        *,
        ring_slots: int,
        reporter: Reporter,
        telemetry: TelemetryRecorder,
        sender_files: list[ReaderFile] | None = None,
        receiver: ReceiverPlan | None = None,
        log_level: int = logging.WARNING,
    ) -> None:
        # The file lists go to the children as msgpack (control.pack_params,
        # pack_reader_files), packed here once: ~85 and ~100 B per file, where the
        # structs and tuples held ~290 and ~170 B, and pickling them at spawn cost the
        # pickler's memo ~630 and ~120 B per file more. This object keeps only the packed
        # bytes (in one-element lists: workers.messages.unbox); the caller should drop
        # its own lists (pipeline.cli.sending does).
        self._packed_params = control.pack_params(params)
        self.params = msgspec.structs.replace(params, files=[])
        self._packed_files = pack_reader_files(sender_files or [])
        self.ring_slots = ring_slots
        self.reporter = reporter
        self.telemetry = telemetry
        self.receiver = receiver
        self.log_level = log_level
        self.ctx = multiprocessing.get_context("spawn")
        self.token = secrets.token_hex(6)
        self.processes: dict[str, BaseProcess] = {}
        self.ring: SlotRing | None = None
        self.finished: control.Finished | None = None
        self._done = asyncio.Event()
        self._cancel_requested = 0
        self._child_ends: dict[str, list[PipeEnd]] = {}
        self._conn_pipes: dict[str, PipeEnd] = {}
        self._worker_args: dict[str, tuple[Any, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ctl: PipeEnd | None = None
        self.clock = TransferClock(time.monotonic())

    # -- public -----------------------------------------------------------------------

    async def run(self) -> SessionResult:
        started = time.monotonic()
        self.clock = TransferClock(started)
        loop = asyncio.get_running_loop()
        self._wire_pipes()
        ctl_parent, ctl_child = self.ctx.Pipe(duplex=True)
        self._ctl = ctl_parent
        try:
            self._start(
                "connection",
                run_connection,
                (self._packed_params, ctl_child, self._conn_pipes, self.log_level),
            )
            self._packed_params.clear()  # the child has its copy (see unbox)
            ctl_child.close()
            for pipe in self._conn_pipes.values():
                pipe.close()
            watch_readable(loop, ctl_parent, self._read_ctl)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.cancel, "stopped by user (signal)")
            await self._done.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                loop.remove_reader(ctl_parent.fileno())
            for task in self._tasks:
                task.cancel()
            exitcodes = await self._cleanup()
            ctl_parent.close()
        f = self.finished or control.Finished(
            outcome="failed",
            code="internal",
            message="the connection process died without reporting an outcome",
            by_peer=False,
            diagnostics={},
            counters={},
        )
        now = time.monotonic()
        return SessionResult(
            f.outcome, f.code, f.message, f.by_peer, f.diagnostics, f.counters, now - started, exitcodes, self.clock.seconds(now)
        )

    def cancel(self, message: str) -> None:
        """SIGINT/SIGTERM: ask the connection process to cancel; a second one stops hard."""
        self._cancel_requested += 1
        if self._cancel_requested > 1 or self._ctl is None:
            self._done.set()
            return
        self.reporter.status("cancelling...")
        with contextlib.suppress(OSError):
            control.send(self._ctl, control.Cancel(message=message))
        loop = asyncio.get_running_loop()
        loop.call_later(CANCEL_GRACE, self._done.set)

    # -- processes -------------------------------------------------------------------------

    def _start(self, role: str, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        process = self.ctx.Process(target=target, args=args, name=f"pxfer-{role}", daemon=False)
        process.start()
        self.processes[role] = process
        assert process.pid is not None
        self.telemetry.track(role, process.pid)
        asyncio.get_running_loop().add_reader(process.sentinel, self._on_exit, role)

    def _on_exit(self, role: str) -> None:
        process = self.processes[role]
        loop = asyncio.get_running_loop()
        loop.remove_reader(process.sentinel)
        # Not join(0): the sentinel closes as the child's files do, a moment before
        # it can be reaped, and waitpid(WNOHANG) then leaves exitcode None (the
        # peer was told "exit status None").  With a timeout, join() reaps with a
        # blocking waitpid once the sentinel is ready: immediate here.
        process.join(1.0)
        if role == "connection":
            self._read_ctl()  # its Finished may still sit in the pipe
            self._done.set()
            return
        if self.finished is None and process.exitcode != 0 and self._ctl is not None:
            with contextlib.suppress(OSError):
                control.send(self._ctl, control.WorkerDied(role=role, exitcode=process.exitcode))

    def _wire_pipes(self) -> None:
        pipe = self.ctx.Pipe
        if self.params.role == "sender":
            r2c_r, r2c_w = pipe(duplex=False)
            r2h_r, r2h_w = pipe(duplex=False)
            c2r_r, c2r_w = pipe(duplex=False)
            h2r_r, h2r_w = pipe(duplex=False)
            h2c_r, h2c_w = pipe(duplex=False)
            self._conn_pipes = {"from_reader": r2c_r, "to_reader": c2r_w, "from_hasher": h2c_r}
            self._worker_args = {
                "reader": (r2c_w, r2h_w, [c2r_r, h2r_r]),
                "hasher": (r2h_r, h2r_w, h2c_w),
            }
            self._child_ends = {"reader": [r2c_w, r2h_w, c2r_r, h2r_r], "hasher": [r2h_r, h2r_w, h2c_w]}
        else:
            c2w_r, c2w_w = pipe(duplex=False)
            w2c_r, w2c_w = pipe(duplex=False)
            c2h_r, c2h_w = pipe(duplex=False)
            h2c_r, h2c_w = pipe(duplex=False)
            self._conn_pipes = {"to_writer": c2w_w, "from_writer": w2c_r, "to_hasher": c2h_w, "from_hasher": h2c_r}
            self._worker_args = {"writer": (c2w_r, w2c_w), "hasher": (c2h_r, h2c_w)}
            self._child_ends = {"writer": [c2w_r, w2c_w], "hasher": [c2h_r, h2c_w]}

    def _create_ring(self, chunk_size: int) -> RingSpec:
        self.ring = SlotRing.create(self.ring_slots, DATA_HEADER_LEN + chunk_size)
        return self.ring.spec

    def _start_sender_workers(self, chunk_size: int) -> RingSpec:
        spec = self._create_ring(chunk_size)
        r2c_w, r2h_w, releases = self._worker_args["reader"]
        self._start("reader", run_reader, (spec, self._packed_files, chunk_size, r2c_w, r2h_w, releases))
        self._packed_files.clear()
        self._start("hasher", run_sender_hasher, (spec, *self._worker_args["hasher"]))
        self._close_child_ends()
        return spec

    def _start_receiver_workers(self, chunk_size: int) -> RingSpec:
        assert self.receiver is not None
        spec = self._create_ring(chunk_size)
        r = self.receiver
        self._start("writer", run_writer, (spec, r.out_dir, self.token, r.on_exists, *self._worker_args["writer"]))
        self._start("hasher", run_receiver_hasher, (spec, *self._worker_args["hasher"]))
        self._close_child_ends()
        return spec

    def _close_child_ends(self) -> None:
        # The children hold their own copies now; ours would hide their EOFs.
        for ends in self._child_ends.values():
            for end in ends:
                end.close()
        self._child_ends = {}

    # -- control messages -----------------------------------------------------------------------

    def _read_ctl(self) -> None:
        assert self._ctl is not None
        try:
            while self._ctl.poll():
                self._on_ctl(control.recv(self._ctl))
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._ctl.fileno())

    def _on_ctl(self, msg: control.ControlMessage) -> None:
        assert self._ctl is not None
        match msg:
            case control.Progress():
                now = time.monotonic()
                if self.params.role == "sender":
                    self.clock.progress(now, active=msg.frames_sent > 0 or msg.files_done > 0)
                self.reporter.progress(msg)
                self.telemetry.record_progress(
                    now,
                    msg.bytes_done,
                    msg.frames_sent,
                    msg.retransmitted,
                    msg.buffered_amount,
                    msg.window_in_use,
                )
            case control.Status(text=text):
                self.reporter.status(text)
            case control.Connected(pair=pair, reconnect=reconnect):
                self.reporter.connected(pair, reconnect)
            case control.Negotiated(chunk_size=chunk_size):
                spec = self._start_sender_workers(chunk_size)
                control.send(self._ctl, control.RingReady(spec=spec))
            case control.Offer():
                task = asyncio.get_running_loop().create_task(self._decide(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            case control.Finished():
                self.finished = msg
                self.clock.finished(time.monotonic())
                self.telemetry.end_transfer(time.monotonic())
            case _:
                log.warning("unexpected control message %r", msg)

    async def _decide(self, offer: control.Offer) -> None:
        assert self.receiver is not None and self._ctl is not None
        files = FileTable.unpack(offer.files)
        accept, code, message, check = await self.receiver.decide(offer, files)
        self.receiver.check = check
        self.receiver.relpaths = files.paths
        if not accept:
            control.send(self._ctl, control.Decision(accept=False, code=code, message=message))
            return
        self.clock.accepted(time.monotonic())
        spec = self._start_receiver_workers(offer.chunk_size)
        control.send(self._ctl, control.Decision(accept=True, spec=spec))

    # -- cleanup (A.2 rule 2) ----------------------------------------------------------------------

    async def _cleanup(self) -> dict[str, int | None]:
        loop = asyncio.get_running_loop()
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                loop.remove_reader(process.sentinel)
        await self._reap(STOP_GRACE)
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
        await self._reap(TERMINATE_GRACE)
        for process in self.processes.values():
            if process.is_alive():
                process.kill()
        await self._reap(TERMINATE_GRACE)
        for end in (e for ends in self._child_ends.values() for e in ends):
            end.close()
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
        if self.receiver is not None and self.receiver.relpaths:
            # The writer removes its partial files; this catches a writer that was killed.
            with contextlib.suppress(OSError):
                sweep_partials(self.receiver.out_dir, self.receiver.relpaths, self.token)
            if self.receiver.check is not None and (self.finished is None or self.finished.outcome != "completed"):
                remove_new_dirs(self.receiver.out_dir, self.receiver.check.new_dirs)
        return {role: p.exitcode for role, p in self.processes.items()}

    async def _reap(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in self.processes.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for process in self.processes.values():
            if not process.is_alive():
                process.join(0)

