"""Receiver state machine (Appendix A.2, B.3-B.6).

::

    HELLO ──sender hello──► MANIFEST ──last part, valid──► DECIDING ──accept()──► RECEIVING ──done──► FINISHING
                                │                            │                                       │
                                └─bad manifest/path─► failed └─reject()──► rejected    every verdict ─┴─► completed
    any state: cancel / error frame, local fail, abort ──► cancelled | failed | no_route

Acknowledgement (B.5).  ``cum`` advances over a frame only when the shell
reports ``chunk_stored`` - the writer has written it and the hasher has hashed
it, so its ring slot is free again.  That is stricter than "handed to the
writer" and is what bounds the receiver's ring: together with the sender's
window (``seq < cum + W``) at most ``W`` frames occupy slots at any time.
``sack`` lists every frame received at or beyond ``cum`` (received, maybe not
stored yet), so the sender never retransmits what is merely queued.  While
receiving, an ack is repeated after ``idle_ack_interval`` without one: the ack
that moved ``cum`` may have been lost (docs/protocol.md, "Keepalive acks").

Hashing order: chunks are handed to the hasher (``HashChunk``) strictly in
file byte order; a chunk that arrives early (unordered channel, retransmission)
waits in ``_hash_waiting`` - bounded by the window.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ErrorCode, RemoteProtocolError
from .events import (
    DiscardFile,
    FileVerdict,
    FinalizeFile,
    HashChunk,
    HashEnd,
    ManifestReady,
    OpenFile,
    StoreChunk,
)
from .filetable import FileTable
from .frames import (
    MAX_SACK_RANGES,
    Accept,
    Ack,
    ControlFrame,
    DataFrame,
    Done,
    DoneAck,
    Error,
    FileEnd,
    FileResult,
    Hello,
    Manifest,
    Reject,
    Resume,
    SeqRange,
    Verdict,
)
from .machine import MachineBase
from .manifest import ManifestAssembler, chunk_count, chunk_length
from .outcome import Outcome
from .verdicts import Verdicts


class ReceiverState(enum.Enum):
    HELLO = "hello"
    MANIFEST = "manifest"
    DECIDING = "deciding"
    RECEIVING = "receiving"
    FINISHING = "finishing"


@dataclass(slots=True)
class _FileProgress:
    chunks: int
    received: bytearray  # one byte per chunk: 1 once received
    next_hash: int = 0
    opened: bool = False


def seq_ranges(seqs: set[int], limit: int = MAX_SACK_RANGES) -> list[SeqRange]:
    """Collapse a set of sequence numbers into at most ``limit`` ascending [first, end) ranges."""
    ranges: list[SeqRange] = []
    for seq in sorted(seqs):
        if ranges and ranges[-1][1] == seq:
            ranges[-1] = (ranges[-1][0], seq + 1)
        elif len(ranges) == limit:
            break
        else:
            ranges.append((seq, seq + 1))
    return ranges


class ReceiverMachine(MachineBase):
    role = "receiver"

    def __init__(
        self,
        session: str,
        *,
        max_message_size: int,
        window: int,
        ack_interval: float = 0.2,
        idle_ack_interval: float = 1.0,
        max_files: int = 1_000_000,
        agent: str | None = None,
    ) -> None:
        super().__init__(session, max_message_size)
        self.window = window
        self.ack_interval = ack_interval
        self.idle_ack_interval = idle_ack_interval
        self.ack_every = max(1, window // 4)
        self.max_files = max_files
        self.agent = agent
        self.state = ReceiverState.HELLO
        self.files = FileTable()
        self.chunk_size = 0
        self.total_bytes = 0
        self.total_chunks = 0
        self._assembler: ManifestAssembler | None = None
        self._reoffer: ManifestAssembler | None = None
        # Files still arriving; a file whose every chunk arrived (and went to the
        # hasher) leaves it for one byte in _arrived, so that a 100,000-file batch
        # does not keep 100,000 _FileProgress objects.
        self._progress: dict[int, _FileProgress] = {}
        self._arrived = bytearray()  # one byte per file: 1 once all its chunks arrived
        # Flow control.
        self.cum = 0
        self._beyond: dict[int, tuple[int, int]] = {}  # seq >= cum received -> (file, chunk)
        self._stored: set[int] = set()  # seq >= cum written and hashed
        self._hash_waiting: dict[tuple[int, int], int] = {}  # (file, chunk) -> seq
        self._highest_seen = -1
        self._last_ack_cum = 0
        self._ack_due: float | None = None
        self._last_ack_at: float | None = None  # None until the first ack went out
        # Completion.
        # file_end and our digest, per file until its verdict.  A verified file then
        # keeps only its 32-byte digest in _verified_sha256 (id * 32): enough to
        # answer a file_end resent after a reconnect, and to tell a different one.
        self._file_ends: dict[int, FileEnd] = {}
        self._file_ends_seen = 0
        self._digests: dict[int, str] = {}
        self._verified_sha256 = bytearray()
        self._finalizing: set[int] = set()
        # A hash mismatch ends the session, but only once the files already verified
        # have their final names and their file_result went out (they stay, and
        # both sides count them): (code, message) until then.
        self._deferred_failure: tuple[ErrorCode, str] | None = None
        self.verdicts = Verdicts()
        self._done: Done | None = None
        # Counters.
        self.bytes_received = 0
        self.bytes_stored = 0
        self.duplicates = 0

    # -- inputs from the shell ---------------------------------------------------

    def link_lost(self, now: float) -> None:
        if self.terminal:
            return
        self.link_up = False
        self._ack_due = None

    def reconnected(self, now: float) -> None:
        """New channel after a loss: hello with resume, then what we hold (A.3, C.5)."""
        if self.terminal:
            return
        self.link_up = True
        self._send(self._hello(resume=True))
        self._send(Resume(cum=self.cum, sack=seq_ranges(set(self._beyond)) or None))
        self._last_ack_cum = self.cum
        if self._last_ack_at is not None:
            self._last_ack_at = now

    def accept(self, now: float) -> None:
        """The user (or ``--yes``) accepted the manifest: open the trust gate (C.4)."""
        if self.terminal:
            return
        if self.state is not ReceiverState.DECIDING:
            raise RuntimeError(f"accept() in state {self.state.value}")
        self.state = ReceiverState.RECEIVING
        self._send(Accept(window=self.window))

    def reject(self, code: str, message: str) -> None:
        if self.terminal:
            return
        self._send(Reject(code=code, message=message))
        self._terminate(Outcome.REJECTED, code, message, by_peer=False)

    def chunk_stored(self, seq: int, now: float) -> None:
        """The writer wrote and the hasher hashed frame ``seq``; its slot is free."""
        if self.terminal:
            return
        held = self._beyond.get(seq)
        if held is None or seq in self._stored:
            raise RuntimeError(f"chunk_stored({seq}) for a frame not held")
        self._stored.add(seq)
        self.bytes_stored += chunk_length(self.files.size(held[0]), self.chunk_size, held[1])
        while self.cum in self._stored:
            self._stored.discard(self.cum)
            del self._beyond[self.cum]
            self.cum += 1
        if self.cum - self._last_ack_cum >= self.ack_every or self.cum == self.total_chunks:
            self._send_ack(now)
        elif self._ack_due is None:
            self._ack_due = now + self.ack_interval

    def file_digest(self, file_id: int, sha256: str, now: float) -> None:
        """The hasher's digest of ``file_id`` (every byte, in order)."""
        if self.terminal:
            return
        self._digests[file_id] = sha256
        self._maybe_verify(file_id)

    def file_finalized(self, file_id: int, now: float) -> None:
        """The writer renamed the verified file to its final name."""
        if self.terminal:
            return
        self._finalizing.discard(file_id)
        self._verdict(file_id, "verified", self._digests[file_id])
        if self._deferred_failure is not None:
            self._maybe_fail_deferred()
            return
        self._maybe_done_ack()

    def file_failed(self, file_id: int | None, code: ErrorCode, message: str) -> None:
        """The writer could not store or finalize a file (disk full, permissions...)."""
        if self.terminal:
            return
        if file_id is not None and file_id < len(self.files) and file_id not in self.verdicts:
            self._verdict(file_id, "io_error", None)
            self._outbox.append(DiscardFile(file_id))
        self.fail(code, message)

    @property
    def introduced(self) -> bool:
        return self.state not in (ReceiverState.HELLO, ReceiverState.MANIFEST)

    def _awaiting_summary(self) -> bool:
        return self.state in (ReceiverState.RECEIVING, ReceiverState.FINISHING)

    def next_timer(self) -> float | None:
        if self.terminal or not self.link_up:
            return None
        due = self._ack_due
        if self.state is ReceiverState.RECEIVING and self._last_ack_at is not None:
            # Keepalive: an ack lost on a partially reliable channel may be the one
            # the sender waits for (every frame it has out is SACKed, so its timeout
            # finds nothing to resend).  Nothing else would make us ack again.
            idle = self._last_ack_at + self.idle_ack_interval
            due = idle if due is None else min(due, idle)
        return due

    def handle_timer(self, now: float) -> None:
        due = self.next_timer()
        if due is not None and now >= due:
            self._send_ack(now)

    @property
    def files_done(self) -> int:
        return len(self.verdicts)

    # -- frames from the peer ----------------------------------------------------

    def _on_control(self, frame: ControlFrame, now: float) -> None:
        if self._on_peer_stop(frame):
            return
        match frame:
            case Hello():
                self._check_hello(frame, "sender")
                if self.state is ReceiverState.HELLO:
                    self.state = ReceiverState.MANIFEST
                    limit = self.frame_limit - 24
                    self._assembler = ManifestAssembler(max_chunk_size=limit, max_files=self.max_files)
                elif not frame.resume:
                    raise RemoteProtocolError("protocol", "a second hello without resume")
            case Manifest() if self.state is ReceiverState.MANIFEST:
                self._on_manifest_part(frame)
            case Manifest() if self.state in (ReceiverState.DECIDING, ReceiverState.RECEIVING):
                self._on_reoffer(frame)
            case FileEnd() if self.state in (ReceiverState.RECEIVING, ReceiverState.FINISHING):
                self._on_file_end(frame)
            case Done() if self.state is ReceiverState.RECEIVING:
                self._on_done(frame)
            case Done() if self.state is ReceiverState.FINISHING and frame == self._done:
                pass  # resent after a reconnect or a timeout; done_ack follows the last verdict
            case _:
                raise RemoteProtocolError(
                    "protocol", f"unexpected {type(frame).__name__.lower()} frame in state {self.state.value}"
                )

    def _on_manifest_part(self, frame: Manifest) -> None:
        assert self._assembler is not None
        files = self._assembler.add(frame)
        if files is None:
            return
        self.files = files
        self._assembler = None
        self.chunk_size = frame.chunk_size
        self.total_bytes = files.total_bytes
        self._progress = {}
        self._arrived = bytearray(len(files))
        self._verified_sha256 = bytearray(32 * len(files))
        self.total_chunks = sum(chunk_count(files.size(i), self.chunk_size) for i in range(len(files)))
        self.state = ReceiverState.DECIDING
        self._outbox.append(ManifestReady(files, self.chunk_size, self.total_bytes))

    def _on_reoffer(self, frame: Manifest) -> None:
        """The sender offered again after a reconnect; it must be the same offer."""
        if frame.part == 0:
            self._reoffer = ManifestAssembler(max_chunk_size=self.frame_limit - 24, max_files=self.max_files)
        if self._reoffer is None:
            raise RemoteProtocolError("protocol", "manifest part without part 0")
        files = self._reoffer.add(frame)
        if files is None:
            return
        self._reoffer = None
        if files != self.files or frame.chunk_size != self.chunk_size:
            raise RemoteProtocolError("bad_manifest", "the manifest changed across a reconnect")
        if self.state is ReceiverState.RECEIVING:
            self._send(Accept(window=self.window))  # our accept was lost with the old channel

    def _on_data(self, frame: DataFrame, now: float) -> None:
        if self.state not in (ReceiverState.RECEIVING, ReceiverState.FINISHING):
            raise RemoteProtocolError("protocol", f"DATA frame before accept (state {self.state.value})")
        seq = frame.seq
        if frame.file_id >= len(self.files):
            raise RemoteProtocolError("protocol", f"DATA for file {frame.file_id}, manifest has {len(self.files)}")
        size = self.files.size(frame.file_id)
        progress = self._progress.get(frame.file_id)
        if progress is not None:
            count = progress.chunks
        else:
            count = chunk_count(size, self.chunk_size)
            if not self._arrived[frame.file_id]:
                progress = self._progress[frame.file_id] = _FileProgress(count, bytearray(count))
        if frame.chunk_index >= count:
            raise RemoteProtocolError(
                "protocol", f"chunk {frame.chunk_index} of file {frame.file_id} beyond its {count} chunks"
            )
        expected = chunk_length(size, self.chunk_size, frame.chunk_index)
        if len(frame.payload) != expected:
            raise RemoteProtocolError("protocol", f"chunk of {len(frame.payload)} bytes where {expected} expected")
        if frame.last != (frame.chunk_index == count - 1):
            raise RemoteProtocolError("protocol", "LAST flag does not match the file's final chunk")
        if seq < self.cum or seq in self._beyond:
            self.duplicates += 1  # B.5: drop silently, acknowledge again
            self._send_ack(now)
            return
        if self.state is ReceiverState.FINISHING:
            raise RemoteProtocolError("protocol", "new DATA after done")
        if progress is None or progress.received[frame.chunk_index]:  # None: every chunk arrived
            raise RemoteProtocolError("protocol", f"chunk {frame.chunk_index} of file {frame.file_id} sent under two seqs")
        if seq >= self.cum + self.window or seq >= self.total_chunks:
            raise RemoteProtocolError("protocol", f"DATA seq {seq} outside the window [{self.cum}, {self.cum + self.window})")
        progress.received[frame.chunk_index] = 1
        self._beyond[seq] = (frame.file_id, frame.chunk_index)
        self.bytes_received += expected
        if not progress.opened:
            progress.opened = True
            self._outbox.append(OpenFile(frame.file_id))
        self._outbox.append(
            StoreChunk(seq, frame.file_id, frame.chunk_index, frame.chunk_index * self.chunk_size, frame.payload)
        )
        self._hash_in_order(frame.file_id, frame.chunk_index, seq, progress)
        gap = seq > self._highest_seen + 1
        self._highest_seen = max(self._highest_seen, seq)
        if gap:
            self._send_ack(now)
        elif self._ack_due is None:
            self._ack_due = now + self.ack_interval

    def _hash_in_order(self, file_id: int, chunk_index: int, seq: int, progress: _FileProgress) -> None:
        if chunk_index != progress.next_hash:
            self._hash_waiting[(file_id, chunk_index)] = seq
            return
        self._outbox.append(HashChunk(seq, file_id))
        progress.next_hash += 1
        while (file_id, progress.next_hash) in self._hash_waiting:
            waiting = self._hash_waiting.pop((file_id, progress.next_hash))
            self._outbox.append(HashChunk(waiting, file_id))
            progress.next_hash += 1
        if progress.next_hash == progress.chunks:
            self._outbox.append(HashEnd(file_id))
            del self._progress[file_id]
            self._arrived[file_id] = 1

    def _on_file_end(self, frame: FileEnd) -> None:
        if frame.id >= len(self.files):
            raise RemoteProtocolError("protocol", f"file_end for unknown file {frame.id}")
        entry = self.files[frame.id]
        chunks = chunk_count(entry.size, self.chunk_size)
        if frame.size != entry.size or frame.chunks != chunks:
            raise RemoteProtocolError(
                "protocol", f"file_end for {entry.path}: {frame.size} bytes/{frame.chunks} chunks, manifest says {entry.size}/{chunks}"
            )
        known = self._file_ends.get(frame.id)
        if known is None and self.verdicts.get(frame.id) == "verified":
            # Size and chunks matched the manifest above, so the digest tells them apart.
            digest = self._verified_sha256[32 * frame.id : 32 * frame.id + 32].hex()
            if frame.sha256 != digest:
                raise RemoteProtocolError("protocol", f"two different file_end frames for {entry.path}")
            self._send(FileResult(id=frame.id, status="verified", sha256=digest))
            return
        if known is not None:
            if known != frame:
                raise RemoteProtocolError("protocol", f"two different file_end frames for {entry.path}")
            verdict = self.verdicts.get(frame.id)
            if verdict is not None:  # our file_result may have been lost in a reconnect
                self._send(FileResult(id=frame.id, status=verdict, sha256=self._digests.get(frame.id)))
            return
        self._file_ends[frame.id] = frame
        self._file_ends_seen += 1
        if chunks == 0:
            self._outbox.append(OpenFile(frame.id))
            self._outbox.append(HashEnd(frame.id))
        self._maybe_verify(frame.id)

    def _on_done(self, frame: Done) -> None:
        if frame.files != len(self.files) or frame.bytes != self.total_bytes:
            raise RemoteProtocolError("protocol", f"done says {frame.files} files/{frame.bytes} bytes, manifest differs")
        missing = len(self.files) - self._file_ends_seen
        if missing:
            raise RemoteProtocolError("protocol", f"done before file_end of {missing} files")
        self._done = frame
        self.state = ReceiverState.FINISHING
        self._maybe_done_ack()

    # -- internals ---------------------------------------------------------------

    def _send_ack(self, now: float) -> None:
        self._ack_due = None
        self._last_ack_cum = self.cum
        self._last_ack_at = now
        if self.link_up:
            self._send(Ack(cum=self.cum, sack=seq_ranges(set(self._beyond)) or None))

    def _maybe_verify(self, file_id: int) -> None:
        end = self._file_ends.get(file_id)
        digest = self._digests.get(file_id)
        if end is None or digest is None or file_id in self.verdicts or file_id in self._finalizing:
            return
        if digest == end.sha256:
            if self._deferred_failure is None:  # else: the session is ending, the partial goes
                self._finalizing.add(file_id)
                self._outbox.append(FinalizeFile(file_id))
            return
        path = self.files.path(file_id)
        self._outbox.append(DiscardFile(file_id))
        self._verdict(file_id, "mismatch", digest)
        if self._deferred_failure is None:
            message = f"{path}: SHA-256 differs (sender {end.sha256[:16]}..., received {digest[:16]}...)"
            self._deferred_failure = ("hash_mismatch", message)
        self._maybe_fail_deferred()

    def _maybe_fail_deferred(self) -> None:
        """B.6: the mismatch's ``error``, once no verified file awaits its final name."""
        if self._deferred_failure is None or self._finalizing:
            return
        code, message = self._deferred_failure
        self._send(Error(code=code, message=message))
        self._terminate(Outcome.FAILED, code, message, by_peer=False)

    def _verdict(self, file_id: int, status: Verdict, sha256: str | None) -> None:
        self.verdicts[file_id] = status
        if status == "verified" and sha256 is not None:
            self._verified_sha256[32 * file_id : 32 * file_id + 32] = bytes.fromhex(sha256)
            self._file_ends.pop(file_id, None)
            self._digests.pop(file_id, None)
        self._send(FileResult(id=file_id, status=status, sha256=sha256))
        self._outbox.append(FileVerdict(file_id, status))

    def _maybe_done_ack(self) -> None:
        if self.state is not ReceiverState.FINISHING or len(self.verdicts) < len(self.files):
            return
        verified = self.verdicts.count("verified")
        failed = len(self.verdicts) - verified
        self._send(DoneAck(verified=verified, failed=failed))
        if failed:
            self._terminate(Outcome.FAILED, "io_error", f"{failed} files failed", by_peer=False)
        else:
            self._terminate(Outcome.COMPLETED, None, f"{verified} files verified", by_peer=False)
