"""Reader worker: reads the sender's files chunk by chunk into ring slots.

Each chunk is read with ``preadv`` straight into its slot's payload (no extra
copy) and announced by the same ``ReadChunk`` to both consumers::

    reader ──ReadChunk──► connection   (frames and sends it)
    reader ──ReadChunk──► hasher       (hashes it)
    connection, hasher ──ReleaseSlot──► reader

A slot is free again only when BOTH consumers released it; the reader counts
the releases it is still owed per slot.  With every slot out it blocks in
``multiprocessing.connection.wait`` on the release pipes, which is also how
the ring bounds memory and applies back-pressure to the disk.

A file must have exactly the size the manifest announced.  The reader detects
a change while reading: fewer bytes than expected (it shrank) or one more byte
available after them (it grew).  The check is made before the last chunk goes
out, so a changed file never gets a ``last`` chunk.  That, an unreadable file
or anything else the OS refuses is reported as ``WorkerError("reader",
"io_error", ...)`` to the connection, and the reader reads nothing more; it
keeps answering releases until ``Stop`` or EOF.

On exit it sends ``Stop`` to the hasher, whose only input it is.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import wait

import msgspec

from pipeline.shm_ring import RingSpec, SlotRing

from .channel import PipeEnd, enter_worker_process, recv, report, send
from .messages import (
    FileRead,
    ReadChunk,
    ReaderFile,
    ReleaseSlot,
    Stop,
    WorkerError,
    iter_reader_files,
)

WORKER = "reader"
CONSUMERS = 2  # connection and hasher


class _Stopped(Exception):
    """Stop or EOF arrived: unwind to the entry point."""


class _FileFault(Exception):
    """The current file cannot be read as announced.

    ``text`` says why with ``{file}`` where the file goes; :meth:`naming` fills it
    in: with its path here for our user, with its manifest path for the peer
    (which does not learn where files live on this machine)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def naming(self, file: str) -> str:
        return self.text.replace("{file}", file)


class _Reader:
    def __init__(
        self,
        ring: SlotRing,
        chunk_size: int,
        to_conn: PipeEnd,
        to_hasher: PipeEnd,
        releases: list[PipeEnd],
    ) -> None:
        self._ring = ring
        self._chunk_size = chunk_size
        self._to_conn = to_conn
        self._to_hasher = to_hasher
        self._releases = releases
        self._free: deque[int] = deque(range(ring.spec.slots))
        self._owed = [0] * ring.spec.slots  # releases still due, per slot

    # -- slots --------------------------------------------------------------

    def _take_slot(self) -> int:
        self._service(timeout=0)  # apply releases and notice Stop early
        while not self._free:
            self._service(timeout=None)
        return self._free.popleft()

    def _service(self, timeout: float | None) -> None:
        """Handle every message ready within ``timeout`` (None: wait for one)."""
        ready = wait(self._releases, timeout)
        while ready:
            for conn in ready:
                try:
                    msg = recv(conn)  # type: ignore[arg-type]  # wait() widens the type
                except (EOFError, ConnectionResetError) as exc:
                    raise _Stopped from exc  # a consumer is gone: nothing left to do
                except msgspec.DecodeError as exc:
                    self._report("internal", f"undecodable message: {exc}", None)
                    continue
                if isinstance(msg, Stop):
                    raise _Stopped
                if not (isinstance(msg, ReleaseSlot) and self._release(msg.slot)):
                    self._report("internal", f"unexpected message {msg!r}", None)
            ready = wait(self._releases, 0)

    def _release(self, slot: int) -> bool:
        if not 0 <= slot < len(self._owed) or self._owed[slot] == 0:
            return False  # not handed out: a consumer's bug
        self._owed[slot] -= 1
        if self._owed[slot] == 0:
            self._free.append(slot)
        return True

    def serve_forever(self) -> None:
        while True:
            self._service(timeout=None)

    # -- files --------------------------------------------------------------

    def read_files(self, files: Iterable[ReaderFile]) -> None:
        for file_id, path, size, name in files:
            try:
                self._read_file(file_id, path, size)
            except _FileFault as exc:
                error = WorkerError(WORKER, "io_error", exc.naming(path), file_id, exc.naming(name))
                report(self._to_conn, error)
                return

    def _read_file(self, file_id: int, path: str, size: int) -> None:
        try:
            # O_NONBLOCK: opening a FIFO planted in place of a file must not hang.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise _FileFault(f"cannot open {{file}}: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _FileFault("{file} is no longer a regular file")
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            offset = 0
            index = 0
            while offset < size:
                length = min(self._chunk_size, size - offset)
                slot = self._take_slot()
                try:
                    self._fill(fd, slot, offset, length, size)
                    last = offset + length == size
                    if last:
                        self._check_no_more(fd, size)
                except BaseException:
                    self._free.appendleft(slot)  # never announced: still ours
                    raise
                chunk = ReadChunk(slot, file_id, index, length, last)
                self._owed[slot] = CONSUMERS
                send(self._to_conn, chunk)
                send(self._to_hasher, chunk)
                offset += length
                index += 1
            if size == 0:
                self._check_no_more(fd, size)
        finally:
            os.close(fd)
        send(self._to_hasher, FileRead(file_id, size))

    def _fill(self, fd: int, slot: int, offset: int, length: int, size: int) -> None:
        got = 0
        with self._ring.payload(slot, length) as view:
            while got < length:
                try:
                    with view[got:] as rest:
                        n = os.preadv(fd, [rest], offset + got)
                except OSError as exc:
                    raise _FileFault(
                        f"cannot read {{file}} at byte {offset + got}: {exc.strerror}"
                    ) from exc
                if n == 0:
                    raise _FileFault(
                        f"{{file}} shrank while being read: it ends at byte {offset + got} "
                        f"of the {size} announced in the manifest"
                    )
                got += n

    def _check_no_more(self, fd: int, size: int) -> None:
        try:
            extra = os.pread(fd, 1, size)
        except OSError as exc:
            raise _FileFault(f"cannot read {{file}} at byte {size}: {exc.strerror}") from exc
        if extra:
            raise _FileFault(
                f"{{file}} grew while being read: it has more than the {size} bytes "
                "announced in the manifest"
            )

    def _report(self, code: str, message: str, file_id: int | None) -> None:
        report(self._to_conn, WorkerError(WORKER, code, message, file_id))


def run_reader(
    spec: RingSpec,
    packed_files: list[bytes],  # workers.messages.pack_reader_files
    chunk_size: int,
    to_conn: PipeEnd,
    to_hasher: PipeEnd,
    releases: list[PipeEnd],
) -> None:
    """Entry point (``multiprocessing.Process`` target).

    ``packed_files`` is :func:`workers.messages.pack_reader_files` of
    ``(file_id, absolute path, expected size, manifest path)`` in sending order;
    ``releases`` are the pipes on which the connection and the hasher return
    slots (and on which ``Stop`` may arrive).
    """
    enter_worker_process("pxfer-reader")
    files: Iterable[ReaderFile] = iter_reader_files(packed_files)
    try:
        with SlotRing.attach(spec) as ring:
            if not 0 < chunk_size <= ring.payload_capacity:
                report(
                    to_conn,
                    WorkerError(
                        WORKER,
                        "internal",
                        f"chunk size {chunk_size} does not fit a slot payload "
                        f"of {ring.payload_capacity} bytes",
                    ),
                )
                files = []
            reader = _Reader(ring, chunk_size, to_conn, to_hasher, releases)
            with contextlib.suppress(_Stopped):
                reader.read_files(files)
                reader.serve_forever()
    except (BrokenPipeError, ConnectionResetError):
        pass  # a consumer is gone; whoever supervises us learns it from that process
    except Exception as exc:
        report(to_conn, WorkerError(WORKER, "internal", f"reader crashed: {exc!r}"))
        raise
    finally:
        with contextlib.suppress(OSError):
            send(to_hasher, Stop())
