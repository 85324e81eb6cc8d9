"""The data plane inside the connection process: machine <-> DataChannel <-> worker pipes.

Everything here runs on the connection process's event loop and must stay
cheap: per chunk it packs a 24-byte header in place, makes the one ``bytes``
copy aiortc's ``send`` requires (sender) or copies the payload into a ring slot
once (receiver), and moves small slot descriptors over pipes.  Files are read,
written and hashed only in the worker processes.

Backpressure: outputs go into one FIFO (``_queue``) in the order the machine
produced them; it drains only while ``bufferedAmount`` is below the high-water
mark and resumes on ``bufferedamountlow``.  DATA frames stay in the queue as
descriptors of ring slots and become bytes only when sent, so the queue costs
no payload memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

from pipeline import control
from pipeline.protocol import events as ev
from pipeline.protocol.frames import DATA_HEADER_LEN, encode_control, pack_data_header_into
from pipeline.protocol.receiver import ReceiverMachine, ReceiverState
from pipeline.protocol.sender import SenderMachine
from pipeline.shm_ring import SlotRing
from workers import messages as wm
from workers.channel import PipeEnd, framed, recv, send_framed

log = logging.getLogger(__name__)

Machine = SenderMachine | ReceiverMachine


class DataPlane:
    def __init__(
        self,
        machine: Machine,
        ctl: PipeEnd,
        pipes: dict[str, PipeEnd],
        *,
        buffered_high: int,
        buffered_low: int,
        on_terminated: Callable[[ev.Terminated], None],
    ) -> None:
        self.machine = machine
        self.ctl = ctl
        self.pipes = pipes
        self.buffered_high = buffered_high
        self.buffered_low = buffered_low
        self.on_terminated = on_terminated
        self.ring: SlotRing | None = None
        self.channel: RTCDataChannel | None = None
        # See hold(): the channel whose messages are kept until attach_channel, and them.
        self._held: RTCDataChannel | None = None
        self._early: list[str | bytes] = []
        self._queue: deque[str | ev.SendData] = deque()
        # Worker messages wait here until the loop is about to poll again (see
        # _to_worker): pipe name -> framed messages, in order.
        self._to_workers: dict[str, list[bytes]] = {}
        self._workers_flush_due = False
        # Receiver slot bookkeeping: a slot is free once writer and hasher released it.
        self._free: deque[int] = deque()
        self._slot_seq: dict[int, int] = {}
        self._slot_refs: dict[int, int] = {}
        self._seq_slot: dict[int, int] = {}
        self._seq_length: dict[int, int] = {}
        # Only the files stored under another name than their manifest path (the
        # ``rename`` policy): one entry per file cost ~400 B of memory per file across
        # this process, the Finished message and the summary.
        self.final_paths: dict[int, str] = {}
        self._current = 0  # current_file(): every file below this one has its verdict
        self.last_message_at = time.monotonic()
        self.last_progress_at = time.monotonic()
        self._last_cum = 0
        self._was_awaiting = False

    # -- wiring -------------------------------------------------------------------

    def attach_ring(self, ring: SlotRing) -> None:
        self.ring = ring
        self._free = deque(range(ring.spec.slots))

    def hold(self, channel: RTCDataChannel) -> None:
        """Keep ``channel``'s messages from now until :meth:`attach_channel`.

        aiortc drops a message that arrives while the channel has no ``message``
        listener.  The peer's first frames (its ``hello``) can arrive between the
        channel opening and ``attach_channel``, a few loop iterations later; lost,
        they left both sides waiting in ``hello`` forever (or failed the receiver
        with "unexpected manifest frame in state hello").  Idempotent.
        """
        if channel is self._held or channel is self.channel:
            return
        self._drop_held()
        self._held = channel
        channel.on("message", self._early.append)

    def _drop_held(self) -> list[str | bytes]:
        early, self._early = self._early, []
        if self._held is not None:
            self._held.remove_all_listeners("message")
            self._held = None
        return early

    def attach_channel(self, channel: RTCDataChannel) -> None:
        """Start using ``channel``; call after the machine's ``start``/``reconnected``
        so that what it held is answered after our own ``hello``."""
        early = self._drop_held() if channel is self._held else []
        self.channel = channel
        channel.bufferedAmountLowThreshold = self.buffered_low
        channel.on("message", self.on_message)
        channel.on("bufferedamountlow", self.flush)
        self.last_message_at = time.monotonic()
        self.last_progress_at = time.monotonic()
        for message in early:
            self.on_message(message)

    def detach_channel(self) -> None:
        """The link is gone: whatever was queued for it is void (the machine resends)."""
        self._drop_held()
        if self.channel is not None:
            self.channel.remove_all_listeners()
        self.channel = None
        self._queue.clear()

    def on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        self.last_message_at = now
        if isinstance(message, str):
            self.machine.receive_text(message, now)
        else:
            self.machine.receive_binary(message, now)
        self.process()

    def on_worker_message(self, role: str, msg: wm.Message) -> None:
        now = time.monotonic()
        m = self.machine
        match msg:
            case wm.ReadChunk(slot, file_id, chunk_index, length, last) if isinstance(m, SenderMachine):
                m.chunk_available(file_id, chunk_index, length, last, slot)
            case wm.FileDigest(file_id, size, sha256) if isinstance(m, SenderMachine):
                m.file_digest(file_id, size, sha256)
            case wm.FileDigest(file_id, _size, sha256) if isinstance(m, ReceiverMachine):
                m.file_digest(file_id, sha256, now)
            case wm.ReleaseSlot(slot) if isinstance(m, ReceiverMachine):
                self._release(slot, now)
            case wm.Finalized(file_id, path) if isinstance(m, ReceiverMachine):
                if path != m.files[file_id].path:
                    self.final_paths[file_id] = path
                m.file_finalized(file_id, now)
            case wm.Discarded():
                pass
            case wm.WorkerError(worker, code, message, file_id, peer_message):
                text = message if message else f"{worker} failed"
                if isinstance(m, ReceiverMachine):
                    m.file_failed(file_id, code, text)  # type: ignore[arg-type]
                else:
                    m.fail(code, text, peer_message=peer_message)  # type: ignore[arg-type]
            case _:
                m.fail("internal", f"unexpected {type(msg).__name__} from the {role}")
        self.process()

    # -- outputs --------------------------------------------------------------------

    def process(self) -> None:
        """Carry out everything the machine asked for, in order."""
        # Until empty: a dead worker found while sending fails the machine, whose
        # error frame and outcome must go out in this same call.
        while outputs := self.machine.drain():
            self._carry_out(outputs)
        now = time.monotonic()
        cum = self.machine.cum
        if cum != self._last_cum:
            self._last_cum = cum
            self.last_progress_at = now
        awaiting = self.awaiting_peer()
        if awaiting and not self._was_awaiting:
            # The watchdogs time the peer's silence only while we wait on it: the
            # time before (our user at the prompt, our workers starting on a loaded
            # machine, our reader) is ours.  Counted, it made a slow accept look like
            # a dead link: a stall, a reconnect the peer may not support, and a
            # verdict that depended on timing (issue 12).
            self.last_message_at = self.last_progress_at = now
        self._was_awaiting = awaiting
        self.flush()

    def awaiting_peer(self) -> bool:
        """Whether only the peer can move the transfer on: the sender has frames out
        (acks are due), or the receiver has accepted and waits for data."""
        m = self.machine
        if isinstance(m, SenderMachine):
            return m.window_in_use > 0
        return m.state is ReceiverState.RECEIVING

    def _carry_out(self, outputs: list[ev.Output]) -> None:
        for output in outputs:
            match output:
                case ev.SendControl(frame):
                    self._queue.append(encode_control(frame))
                case ev.SendData():
                    self._queue.append(output)
                case ev.ReleaseChunk(token):
                    self._to_worker("to_reader", wm.ReleaseSlot(token))
                case ev.Negotiated(chunk_size):
                    control.send(self.ctl, control.Negotiated(chunk_size=chunk_size))
                case ev.ManifestReady(files, chunk_size, total_bytes):
                    control.send(self.ctl, control.Offer(files=files.pack(), chunk_size=chunk_size, total_bytes=total_bytes))
                case ev.OpenFile(file_id):
                    entry = self._receiver.files[file_id]
                    self._to_worker("to_writer", wm.PlanFile(file_id, entry.path, entry.size))
                case ev.StoreChunk():
                    self._store(output)
                case ev.HashChunk(seq, file_id):
                    slot = self._seq_slot[seq]
                    self._to_worker("to_hasher", wm.HashChunk(slot, file_id, self._seq_length[seq]))
                case ev.HashEnd(file_id):
                    self._to_worker("to_hasher", wm.HashEnd(file_id))
                case ev.FinalizeFile(file_id):
                    self._to_worker("to_writer", wm.Finalize(file_id))
                case ev.DiscardFile(file_id):
                    self._to_worker("to_writer", wm.Discard(file_id))
                case ev.FileVerdict():
                    pass
                case ev.Terminated():
                    self.on_terminated(output)

    def _to_worker(self, pipe: str, msg: wm.Message) -> None:
        """Queue ``msg`` for a worker; :meth:`flush_workers` writes it soon, in order.

        Everything queued during one pass of the event loop (aiortc hands over
        every datagram already received without yielding) goes out in one
        ``write(2)`` per pipe, not one per message: a batch of small files costs
        five or more worker messages per file, and each write wakes a worker.
        """
        self._to_workers.setdefault(pipe, []).append(framed(msg))
        if not self._workers_flush_due:
            self._workers_flush_due = True
            asyncio.get_running_loop().call_soon(self.flush_workers)

    def flush_workers(self) -> None:
        """Write every queued worker message; a worker that is gone fails the session.

        This also runs inside aiortc's receive path.  An exception escaping there
        is worse than lost: a BrokenPipeError is a ConnectionError, which aiortc's
        DTLS receive loop takes for its own and silently closes the transport, so
        the error frame never reached the peer (it waited for the watchdog and the
        reconnect deadline and ended ``timeout``).
        """
        self._workers_flush_due = False
        pending, self._to_workers = self._to_workers, {}
        failed = False
        for pipe, frames in pending.items():
            try:
                send_framed(self.pipes[pipe], frames)
            except (BrokenPipeError, ConnectionResetError):
                role = pipe.removeprefix("to_")
                self.machine.fail("internal", f"the {role} process exited unexpectedly")
                failed = True
        if failed:
            self.process()

    def flush(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        while self._queue and channel.bufferedAmount < self.buffered_high:
            item = self._queue.popleft()
            if isinstance(item, str):
                channel.send(item)
                continue
            if item.seq < self.machine.cum:
                continue  # acknowledged while queued: its slot may already hold other data
            assert self.ring is not None
            slot = self.ring.slot(item.token)
            pack_data_header_into(slot, 0, item.file_id, item.chunk_index, item.seq, item.last, item.length)
            channel.send(bytes(slot[: DATA_HEADER_LEN + item.length]))
            slot.release()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def buffered_amount(self) -> int:
        return self.channel.bufferedAmount if self.channel is not None else 0

    # -- receiver slots -----------------------------------------------------------------

    @property
    def _receiver(self) -> ReceiverMachine:
        assert isinstance(self.machine, ReceiverMachine)
        return self.machine

    def _store(self, output: ev.StoreChunk) -> None:
        if self.ring is None or not self._free:
            self.machine.fail("internal", "no free ring slot: the window is larger than the ring")
            return
        slot = self._free.popleft()
        length = len(output.payload)
        self.ring.payload(slot, length)[:] = output.payload
        self._slot_seq[slot] = output.seq
        self._slot_refs[slot] = 2  # writer and hasher
        self._seq_slot[output.seq] = slot
        self._seq_length[output.seq] = length
        self._to_worker("to_writer", wm.WriteChunk(slot, output.file_id, output.offset, length))

    def _release(self, slot: int, now: float) -> None:
        refs = self._slot_refs.get(slot, 0) - 1
        if refs > 0:
            self._slot_refs[slot] = refs
            return
        self._slot_refs.pop(slot, None)
        seq = self._slot_seq.pop(slot)
        del self._seq_slot[seq]
        del self._seq_length[seq]
        self._free.append(slot)
        self._receiver.chunk_stored(seq, now)

    # -- telemetry ------------------------------------------------------------------------

    def current_file(self) -> int:
        """The oldest file without a verdict, or -1; amortised O(1) per call."""
        m = self.machine
        while self._current < len(m.files) and self._current in m.verdicts:
            self._current += 1
        return self._current if self._current < len(m.files) else -1

    def progress(self) -> control.Progress:
        m = self.machine
        current = self.current_file()
        if isinstance(m, SenderMachine):
            return control.Progress(
                bytes_done=m.bytes_acked,
                files_done=len(m.verdicts),
                frames_sent=m.frames_sent,
                retransmitted=m.retransmitted,
                buffered_amount=self.buffered_amount(),
                window_in_use=m.window_in_use,
                duplicates=0,
                current_file=current,
            )
        return control.Progress(
            bytes_done=m.bytes_stored,
            files_done=m.files_done,
            frames_sent=0,
            retransmitted=0,
            buffered_amount=self.buffered_amount(),
            window_in_use=len(self._slot_seq),
            duplicates=m.duplicates,
            current_file=current,
        )

    def counters(self) -> dict[str, Any]:
        p = self.progress()
        return {
            "bytes": p.bytes_done,
            "files_verified": self.machine.verdicts.count("verified"),
            "frames_sent": p.frames_sent,
            "retransmitted_frames": p.retransmitted,
            "duplicate_frames": p.duplicates,
        }


def read_pipe(conn: PipeEnd, role: str, handle: Callable[[str, wm.Message], None], on_eof: Callable[[str], None]) -> None:
    """add_reader callback: take every message already in the pipe."""
    try:
        while conn.poll():
            handle(role, recv(conn))
    except (EOFError, OSError):
        on_eof(role)
