"""Hasher worker: SHA-256 of every file, computed from the ring in parallel.

``hashlib`` is fed the slot's memoryview directly (no copy) and drops the GIL
while hashing large buffers, but it runs in its own process anyway so that a
slow hash never delays the connection process's event loop.

Sender (:func:`run_sender_hasher`)::

    reader ──ReadChunk──► hash, ReleaseSlot ──► reader
    reader ──FileRead───► FileDigest ─────────► connection

Receiver (:func:`run_receiver_hasher`)::

    connection ──HashChunk──► hash, ReleaseSlot ──► connection
    connection ──HashEnd────► FileDigest ─────────► connection

A slot is always released, even when its message is wrong, so that a fault is
reported without also starving the slot's owner.
"""

from __future__ import annotations

import hashlib

from pipeline.shm_ring import RingSpec, SlotRing

from .channel import PipeEnd, enter_worker_process, report, send, serve
from .messages import (
    FileDigest,
    FileRead,
    HashChunk,
    HashEnd,
    Message,
    ReadChunk,
    ReleaseSlot,
    WorkerError,
)

WORKER = "hasher"


class _SenderHashing:
    """One file at a time, in the order the reader reads them."""

    def __init__(self, ring: SlotRing, to_reader: PipeEnd, to_conn: PipeEnd) -> None:
        self._ring = ring
        self._to_reader = to_reader
        self._to_conn = to_conn
        self._file_id: int | None = None
        self._next_index = 0
        self._size = 0
        self._sha = hashlib.sha256()
        self._broken = False

    def handle(self, msg: Message) -> None:
        if isinstance(msg, ReadChunk):
            self._chunk(msg)
        elif isinstance(msg, FileRead):
            self._file_read(msg)
        else:
            self._fault(f"unexpected message {msg!r}", None)

    def _chunk(self, msg: ReadChunk) -> None:
        try:
            if self._broken:
                return  # already reported; just give the slots back until FileRead
            if self._file_id is None:
                self._file_id = msg.file_id
            if msg.file_id != self._file_id:
                self._break(
                    f"chunk of file {msg.file_id} while file {self._file_id} is unfinished",
                    msg.file_id,
                )
            elif msg.chunk_index != self._next_index:
                self._break(
                    f"file {msg.file_id}: chunk {msg.chunk_index} where {self._next_index} was due",
                    msg.file_id,
                )
            else:
                with self._ring.payload(msg.slot, msg.length) as view:
                    self._sha.update(view)
                self._size += msg.length
                self._next_index += 1
        except (IndexError, ValueError) as exc:  # slot or length outside the ring
            self._break(f"bad chunk {msg!r}: {exc}", msg.file_id)
        finally:
            send(self._to_reader, ReleaseSlot(msg.slot))

    def _file_read(self, msg: FileRead) -> None:
        if self._broken:
            pass
        elif self._file_id not in (None, msg.file_id) or msg.size != self._size:
            self._fault(
                f"file {msg.file_id} ended at {msg.size} bytes but "
                f"{self._size} bytes of file {self._file_id} were hashed",
                msg.file_id,
            )
        else:
            send(self._to_conn, FileDigest(msg.file_id, msg.size, self._sha.hexdigest()))
        self._file_id = None
        self._next_index = 0
        self._size = 0
        self._sha = hashlib.sha256()
        self._broken = False

    def _break(self, message: str, file_id: int) -> None:
        """Report once; the file yields no digest."""
        self._broken = True
        self._fault(message, file_id)

    def _fault(self, message: str, file_id: int | None) -> None:
        report(self._to_conn, WorkerError(WORKER, "internal", message, file_id))


class _Running:
    __slots__ = ("sha", "size")

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0


class _ReceiverHashing:
    """Any number of files at once, each fed strictly in byte order."""

    def __init__(self, ring: SlotRing, to_conn: PipeEnd) -> None:
        self._ring = ring
        self._to_conn = to_conn
        self._files: dict[int, _Running] = {}

    def handle(self, msg: Message) -> None:
        if isinstance(msg, HashChunk):
            try:
                running = self._files.setdefault(msg.file_id, _Running())
                with self._ring.payload(msg.slot, msg.length) as view:
                    running.sha.update(view)
                running.size += msg.length
            except (IndexError, ValueError) as exc:
                self._fault(f"bad chunk {msg!r}: {exc}", msg.file_id)
            finally:
                send(self._to_conn, ReleaseSlot(msg.slot))
        elif isinstance(msg, HashEnd):
            # A file that never had a chunk is the empty file.
            done = self._files.pop(msg.file_id, None) or _Running()
            send(self._to_conn, FileDigest(msg.file_id, done.size, done.sha.hexdigest()))
        else:
            self._fault(f"unexpected message {msg!r}", None)

    def _fault(self, message: str, file_id: int | None) -> None:
        report(self._to_conn, WorkerError(WORKER, "internal", message, file_id))


def run_sender_hasher(
    spec: RingSpec, from_reader: PipeEnd, to_reader: PipeEnd, to_conn: PipeEnd
) -> None:
    """Entry point (``multiprocessing.Process`` target) on the sending side."""
    enter_worker_process("pxfer-hasher (sender)")
    try:
        with SlotRing.attach(spec) as ring:
            serve(from_reader, to_conn, WORKER, _SenderHashing(ring, to_reader, to_conn).handle)
    except Exception as exc:
        report(to_conn, WorkerError(WORKER, "internal", f"hasher crashed: {exc!r}"))
        raise


def run_receiver_hasher(spec: RingSpec, from_conn: PipeEnd, to_conn: PipeEnd) -> None:
    """Entry point (``multiprocessing.Process`` target) on the receiving side."""
    enter_worker_process("pxfer-hasher (receiver)")
    try:
        with SlotRing.attach(spec) as ring:
            serve(from_conn, to_conn, WORKER, _ReceiverHashing(ring, to_conn).handle)
    except Exception as exc:
        report(to_conn, WorkerError(WORKER, "internal", f"hasher crashed: {exc!r}"))
        raise
