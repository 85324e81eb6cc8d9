"""Message pipes between pipeline processes, and what every worker does first.

A pipe end is a :class:`multiprocessing.connection.Connection`; one message is
one ``send_bytes`` frame of its MessagePack encoding (:mod:`workers.messages`).
The connection process writes many such frames per ``write(2)``
(:func:`send_framed`); ``recv`` reads them back one by one either way.

Why a plain blocking ``send`` is fine, even inside the connection process's
event loop: every message is a few dozen bytes, written with a single
``write(2)`` (atomic below PIPE_BUF) into a pipe that buffers 64 KiB, i.e. over
a thousand messages.  The number outstanding on any pipe is bounded: chunk
messages and their ``ReleaseSlot`` answers by the ring's slot count (a slot is
handed out again only after it came back), and per-file messages
(``PlanFile``, ``FileRead``, ``FileDigest``, ``Finalize``…) by a consumer that
answers them as fast as it reads them.  Every process keeps draining its
inputs, so a write never waits on the reader of that pipe for long.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from .messages import Message, Stop, WorkerError, decode, encode

if TYPE_CHECKING:  # workers never run an event loop: no asyncio import at run time
    import asyncio

PipeEnd: TypeAlias = "Connection[Any, Any]"
_LENGTH = struct.Struct("!i")  # multiprocessing.connection's frame header


def send(conn: PipeEnd, msg: Message) -> None:
    conn.send_bytes(encode(msg))


# One write(2) at most this long: atomic on a pipe (POSIX PIPE_BUF, 4096 on Linux).
_BATCH_LIMIT = select.PIPE_BUF


def framed(msg: Message) -> bytes:
    """``msg`` exactly as ``Connection.send_bytes`` puts it on the pipe: a 4-byte
    big-endian length, then the bytes.  ``recv`` reads such frames one by one
    however they were written."""
    data = encode(msg)
    return _LENGTH.pack(len(data)) + data


def send_framed(conn: PipeEnd, frames: list[bytes]) -> None:
    """Write many :func:`framed` messages with as few ``write(2)`` calls as possible.

    Each call carries whole frames and at most ``PIPE_BUF`` bytes, so it is
    atomic and never interleaves with another writer of the same pipe; one frame
    longer than that goes alone, as ``send_bytes`` would write it.  A message
    handed to the kernel costs the writer about 12 µs on this 2-core machine, most
    of it waking the reader: batching the connection process's per-chunk and
    per-file messages this way lifted a batch of 4 KiB files by about 14 %.
    (Batching the workers' answers the same way measured no gain.)
    """
    fd = conn.fileno()
    batch: list[bytes] = []
    size = 0
    for frame in frames:
        if batch and size + len(frame) > _BATCH_LIMIT:
            _write_all(fd, b"".join(batch))
            batch, size = [], 0
        batch.append(frame)
        size += len(frame)
    if batch:
        _write_all(fd, b"".join(batch))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def recv(conn: PipeEnd) -> Message:
    """Block for the next message.

    Raises ``EOFError`` when every writer of the pipe has closed it and
    ``msgspec.DecodeError`` for bytes that are not a message.
    """
    return decode(conn.recv_bytes())


def watch_readable(
    loop: asyncio.AbstractEventLoop, conn: PipeEnd, callback: Callable[..., object], *args: Any
) -> None:
    """``loop.add_reader`` for a pipe end that is then read (and written) blocking.

    uvloop (libuv's ``uv_poll_init``) switches a watched fd to non-blocking mode
    for good.  ``Connection.recv_bytes`` needs a blocking fd: on a message that
    has only partly arrived it consumes the header and raises
    ``BlockingIOError``, an ``OSError`` its callers take for EOF; ``send_bytes``
    fails the same way on a full socket.  A 300-file ``Offer`` (two writes) was
    enough for the receiver's supervisor to stop reading its control pipe: the
    session hung before "Offered:".  The loop is only asked for readiness, so
    the fd goes back to blocking.
    """
    loop.add_reader(conn.fileno(), callback, *args)
    os.set_blocking(conn.fileno(), True)


def enter_worker_process(title: str) -> None:
    """First call of every worker entry point.

    SIGINT is ignored: a Ctrl-C reaches the whole foreground process group, and
    the supervisor alone decides how to wind down (it sends ``Stop``).  The
    process title (``ps``, ``top``) is set when ``setproctitle`` is installed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        module = importlib.import_module("setproctitle")
    except ImportError:
        return
    module.setproctitle(title)


def report(conn: PipeEnd, error: WorkerError) -> None:
    """Send ``error``; a vanished reader has nobody to tell, so that is ignored."""
    with contextlib.suppress(OSError):
        send(conn, error)


def serve(
    inbox: PipeEnd,
    outbox: PipeEnd,
    worker: str,
    handle: Callable[[Message], None],
    idle: Callable[[], None] | None = None,
) -> None:
    """Feed every message from ``inbox`` to ``handle`` until ``Stop`` or EOF.

    ``idle``, when given, runs whenever no message is waiting, before blocking
    for the next one: the writer's group commit happens there.

    Undecodable bytes are reported to ``outbox`` as an ``internal`` error and
    skipped.  A broken pipe while ``handle`` answers means the peer is gone, so
    nobody is left to serve: return as on EOF.
    """
    while True:
        try:
            if idle is not None and not inbox.poll():
                idle()
            msg = recv(inbox)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            return
        except msgspec.DecodeError as exc:
            report(outbox, WorkerError(worker, "internal", f"undecodable message: {exc}"))
            continue
        if isinstance(msg, Stop):
            return
        try:
            handle(msg)
        except (BrokenPipeError, ConnectionResetError):
            return
