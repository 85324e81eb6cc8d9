"""In-memory pair harness: a SenderMachine and a ReceiverMachine over a fake link.

Like aioquic's ``client_and_server``: both machines run in one process, time is
simulated, and the harness plays every shell role (reader, sender hasher,
writer, receiver hasher, the reconnect deadline, the signaling room).  The link
can drop, duplicate, reorder and delay DATA frames and ``ack`` frames, and can
be cut and reconnected (a new channel: whatever was in flight is lost, both
machines get ``link_lost`` then ``reconnected``).  Other control frames are
delivered in order and reliably while the link is up: B.5's recovery covers
DATA and acks, not the rest (docs/protocol.md, "Partially reliable channels").

A side that has ended leaves: the link does not come back to it, the other
side's shell reports ``peer_gone`` while its link is down, and a side still
waiting when ``reconnect_deadline`` has passed since its link went down ends
``failed``/``timeout``, as the connection process does (A.1).

The harness records the invariants a test checks: bytes delivered, each chunk
stored exactly once, window never exceeded, no retransmission of data the
receiver's ``resume`` named, one terminal outcome per side.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from pipeline.protocol import events as ev
from pipeline.protocol.frames import FileEntry, Resume, encode_control, encode_data
from pipeline.protocol.manifest import chunk_count
from pipeline.protocol.outcome import Outcome
from pipeline.protocol.receiver import ReceiverMachine
from pipeline.protocol.sender import SenderMachine

SESSION = "7-orbit-lantern-velvet"


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability a DATA frame is held back a little
    ack_drop: float = 0.0  # the same three for ack frames (receiver -> sender)
    ack_duplicate: float = 0.0
    ack_reorder: float = 0.0
    delay: float = 0.001  # base one-way latency (s)
    corrupt_seq: int | None = None  # flip a byte in this DATA frame's payload once
    cuts: list[tuple[float, float]] = field(default_factory=list)  # (at, down_for)
    fault_until: float = 5.0  # drop/dup/reorder only before this time


@dataclass(order=True)
class _Delivery:
    at: float
    order: int
    to_receiver: bool = field(compare=False)
    message: str | bytes = field(compare=False)
    channel: int = field(compare=False)


class Pair:
    def __init__(
        self,
        contents: list[bytes],
        *,
        chunk_size: int = 1024,
        window: int = 8,
        receiver_window: int | None = None,
        ring_slots: int | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        store_latency: float = 0.0,
        reconnect_deadline: float = 60.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.contents = contents
        self.faults = faults or Faults()
        self.files = [FileEntry(id=i, path=f"dir/file{i}.bin", size=len(c)) for i, c in enumerate(contents)]
        self.sender = SenderMachine(
            SESSION, self.files, chunk_size=chunk_size, window=window, max_message_size=65536, rto_initial=0.5
        )
        self.receiver = ReceiverMachine(
            SESSION, max_message_size=65536, window=receiver_window or window, ack_interval=0.05
        )
        self.ring_slots = ring_slots or window + 8
        self.store_latency = store_latency
        self.reconnect_deadline = reconnect_deadline
        self._down_since = 0.0
        self.now = 0.0
        self.channel = 0
        self.link_up = True
        self._queue: list[_Delivery] = []
        self._order = 0
        # Sender shell state.
        self._read_file = 0
        self._read_chunk = 0
        self._free_tokens = list(range(self.ring_slots))
        self._slots: dict[int, bytes] = {}
        self._chunk_size = chunk_size
        self._negotiated = False
        # Receiver shell state.
        self.output: dict[int, bytearray] = {}
        self.final: dict[int, bytes] = {}
        self.discarded: set[int] = set()
        self.stored_count: dict[tuple[int, int], int] = {}
        self._held: dict[int, tuple[int, int, bytes]] = {}
        self._written: dict[int, float] = {}
        self._hashed: set[int] = set()
        self._hashers: dict[int, hashlib._Hash] = {}
        self._hash_next: dict[int, int] = {}
        # Invariant records.
        self.terminated: dict[str, list[ev.Terminated]] = {"sender": [], "receiver": []}
        self.ended_at: dict[str, float] = {}
        self.cut_at: list[float] = []
        self.max_window_used = 0
        self.resume_held: set[int] = set()
        self.violations: list[str] = []
        self.retransmissions = 0
        self.corrupted = False
        self._started = False
        self._up_at = 0.0

    # -- driving ----------------------------------------------------------------

    def run(self, until: float = 120.0, step: float = 0.01, auto_accept: bool = True) -> None:
        if not self._started:
            self._started = True
            self.sender.start(self.now)
            self.receiver.start(self.now)
            self._flush()
        cuts = sorted(self.faults.cuts)
        while self.now < until and not (self.sender.terminal and self.receiver.terminal):
            if cuts and self.now >= cuts[0][0] and self.link_up:
                _at, down_for = cuts.pop(0)
                self._cut(down_for)
            self.now = round(self.now + step, 6)
            if not self.link_up:
                self._while_down()
            self._deliver_due()
            self._service_receiver_shell()
            for machine in (self.sender, self.receiver):
                deadline = machine.next_timer()
                if deadline is not None and self.now >= deadline:
                    machine.handle_timer(self.now)
            if auto_accept and self.receiver.state.value == "deciding":
                self.receiver.accept(self.now)
            self._flush()

    # -- link -------------------------------------------------------------------

    def _post(self, to_receiver: bool, message: str | bytes, data: bool) -> None:
        if not self.link_up:
            return
        f = self.faults
        delay = f.delay
        copies = 1
        if data:
            drop, duplicate, reorder = f.drop, f.duplicate, f.reorder
        elif isinstance(message, str) and message.startswith('{"t":"ack"'):
            drop, duplicate, reorder = f.ack_drop, f.ack_duplicate, f.ack_reorder
        else:
            drop = duplicate = reorder = 0.0
        if self.now < f.fault_until:
            if self.rng.random() < drop:
                return
            if self.rng.random() < duplicate:
                copies = 2
            if self.rng.random() < reorder:
                delay += self.rng.uniform(0.001, 0.05)
        for i in range(copies):
            self._order += 1
            heapq.heappush(
                self._queue, _Delivery(self.now + delay + i * 0.002, self._order, to_receiver, message, self.channel)
            )

    def _deliver_due(self) -> None:
        while self._queue and self._queue[0].at <= self.now:
            d = heapq.heappop(self._queue)
            if d.channel != self.channel or not self.link_up:
                continue
            target = self.receiver if d.to_receiver else self.sender
            if isinstance(d.message, str):
                target.receive_text(d.message, self.now)
            else:
                target.receive_binary(d.message, self.now)
            self._flush()

    def _cut(self, down_for: float) -> None:
        self.link_up = False
        self._up_at = self.now + down_for
        self._down_since = self.now
        self.cut_at.append(self.now)
        self._queue.clear()
        self.sender.link_lost(self.now)
        self.receiver.link_lost(self.now)

    def _while_down(self) -> None:
        """The shells' side of a lost link: the room, the deadline, the reconnect."""
        ended = [m for m in (self.sender, self.receiver) if m.terminal]
        if ended:
            # A side that ended has left the room; the other learns it from signaling.
            for machine in (self.sender, self.receiver):
                if not machine.terminal:
                    machine.peer_gone(self.now)
        elif self.now >= self._up_at:
            self._reconnect()
            return
        if self.now - self._down_since > self.reconnect_deadline:
            for machine in (self.sender, self.receiver):
                machine.abort(Outcome.FAILED, "timeout", "the connection was lost and not restored in time")
        self._flush()

    def _reconnect(self) -> None:
        self.link_up = True
        self.channel += 1
        # The receiver's hello+resume precede everything else on the new channel.
        self.receiver.reconnected(self.now)
        self.sender.reconnected(self.now)
        self._flush()

    # -- shells -----------------------------------------------------------------

    def _flush(self) -> None:
        progressed = True
        while progressed:
            progressed = False
            for output in self.sender.drain():
                progressed = True
                self._sender_output(output)
            for output in self.receiver.drain():
                progressed = True
                self._receiver_output(output)
            if self._negotiated and self._read_more():
                progressed = True

    def _read_more(self) -> bool:
        """Play the reader + sender hasher: fill free slots with the next chunks."""
        read_any = False
        while self._free_tokens and self._read_file < len(self.contents) and not self.sender.terminal:
            data = self.contents[self._read_file]
            count = chunk_count(len(data), self.sender.chunk_size)
            if count == 0:
                self._finish_file()
                continue
            cs = self.sender.chunk_size
            token = self._free_tokens.pop()
            piece = data[self._read_chunk * cs : (self._read_chunk + 1) * cs]
            self._slots[token] = piece
            last = self._read_chunk == count - 1
            self.sender.chunk_available(self._read_file, self._read_chunk, len(piece), last, token)
            read_any = True
            self._read_chunk += 1
            if last:
                self._finish_file()
        return read_any

    def _finish_file(self) -> None:
        data = self.contents[self._read_file]
        self.sender.file_digest(self._read_file, len(data), hashlib.sha256(data).hexdigest())
        self._read_file += 1
        self._read_chunk = 0

    def _sender_output(self, output: ev.Output) -> None:
        match output:
            case ev.SendControl(frame):
                self._post(True, encode_control(frame), data=False)
            case ev.SendData(seq, file_id, chunk_index, last, length, token, retransmission):
                used = self.sender.next_seq - self.sender.cum
                self.max_window_used = max(self.max_window_used, used)
                if used > self.sender.window:
                    self.violations.append(f"window {used} > {self.sender.window}")
                if retransmission:
                    self.retransmissions += 1
                    if seq in self.resume_held:
                        self.violations.append(f"retransmitted seq {seq} that the receiver's resume named")
                payload = self._slots[token]
                assert len(payload) == length
                if self.faults.corrupt_seq == seq and not self.corrupted:
                    self.corrupted = True
                    payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
                self._post(True, encode_data(file_id, chunk_index, seq, last, payload), data=True)
            case ev.ReleaseChunk(token):
                del self._slots[token]
                self._free_tokens.append(token)
            case ev.Negotiated():
                self._negotiated = True
            case ev.Terminated():
                self.terminated["sender"].append(output)
                self.ended_at.setdefault("sender", self.now)
            case _:
                pass

    def _receiver_output(self, output: ev.Output) -> None:
        match output:
            case ev.SendControl(frame):
                if isinstance(frame, Resume):
                    held = {s for first, end in frame.sack or () for s in range(first, end)}
                    self.resume_held = set(range(frame.cum)) | held
                self._post(False, encode_control(frame), data=False)
            case ev.OpenFile(file_id):
                self.output.setdefault(file_id, bytearray(self.files[file_id].size))
            case ev.StoreChunk(seq, file_id, chunk_index, offset, payload):
                key = (file_id, chunk_index)
                self.stored_count[key] = self.stored_count.get(key, 0) + 1
                data = bytes(payload)  # the shell copies out of the message
                self.output[file_id][offset : offset + len(data)] = data
                self._held[seq] = (file_id, chunk_index, data)
                self._written[seq] = self.now + self.store_latency
            case ev.HashChunk(seq, file_id):
                _file_id, chunk_index, data = self._held[seq]
                expected = self._hash_next.get(file_id, 0)
                if chunk_index != expected:
                    self.violations.append(f"hash order: file {file_id} chunk {chunk_index}, expected {expected}")
                self._hash_next[file_id] = chunk_index + 1
                self._hashers.setdefault(file_id, hashlib.sha256()).update(data)
                self._hashed.add(seq)
            case ev.HashEnd(file_id):
                digest = self._hashers.pop(file_id, hashlib.sha256()).hexdigest()
                self.receiver.file_digest(file_id, digest, self.now)
            case ev.FinalizeFile(file_id):
                self.final[file_id] = bytes(self.output.pop(file_id, b""))
                self.receiver.file_finalized(file_id, self.now)
            case ev.DiscardFile(file_id):
                self.output.pop(file_id, None)
                self.discarded.add(file_id)
            case ev.Terminated():
                self.terminated["receiver"].append(output)
                self.ended_at.setdefault("receiver", self.now)
            case _:
                pass

    def _service_receiver_shell(self) -> None:
        """Report chunks that are written (after the latency) and hashed."""
        for seq in sorted(self._written):
            if self._written[seq] <= self.now and seq in self._hashed:
                del self._written[seq]
                self._hashed.discard(seq)
                del self._held[seq]
                self.receiver.chunk_stored(seq, self.now)
        self._flush()

    # -- results ------------------------------------------------------------------

    def outcome(self, side: str) -> Outcome | None:
        terminated = self.terminated[side]
        return terminated[0].outcome if terminated else None
