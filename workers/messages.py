"""Hand-off messages between the connection process and the workers.

Every message is a msgspec Struct encoded as a MessagePack array whose first
element is the class name (``array_like=True, tag=True``), e.g. ``ReleaseSlot(3)``
travels as ``["ReleaseSlot", 3]``: a few bytes, one tagged union to decode.

Who sends what (one pipe per arrow, ``slot`` numbers index the shared ring)::

    sender   reader ──ReadChunk──────────────► connection
             reader ──ReadChunk, FileRead────► hasher
             connection, hasher ──ReleaseSlot► reader   (slot free after both)
             hasher ──FileDigest─────────────► connection

    receiver connection ──PlanFile, WriteChunk, Finalize, Discard──► writer
             writer ──ReleaseSlot, Finalized, Discarded────────────► connection
             connection ──HashChunk, HashEnd─────────────────────────► hasher
             hasher ──ReleaseSlot, FileDigest────────────────────────► connection

    any worker ──WorkerError──► its output;   Stop ──► any worker

A slot named in ``ReadChunk``/``WriteChunk``/``HashChunk`` belongs to the
receiver of that message until it answers ``ReleaseSlot`` for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Final, TypeAlias

import msgspec

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class _Message(msgspec.Struct, array_like=True, tag=True, frozen=True):
    """Base: the tag is the class name."""


# -- sender side ---------------------------------------------------------------


class ReadChunk(_Message, frozen=True):
    """reader → connection and reader → hasher: ``length`` bytes of the file at
    ``chunk_index × chunk_size`` are in ``slot``'s payload."""

    slot: NonNegative
    file_id: NonNegative
    chunk_index: NonNegative
    length: Positive
    last: bool


class FileRead(_Message, frozen=True):
    """reader → hasher: every chunk of the file was sent (alone for an empty file)."""

    file_id: NonNegative
    size: NonNegative


# -- receiver side -------------------------------------------------------------


class PlanFile(_Message, frozen=True):
    """connection → writer, before any chunk of the file: relative POSIX path."""

    file_id: NonNegative
    path: str
    size: NonNegative


class WriteChunk(_Message, frozen=True):
    """connection → writer: write ``slot``'s payload at byte ``offset``."""

    slot: NonNegative
    file_id: NonNegative
    offset: NonNegative
    length: Positive


class HashChunk(_Message, frozen=True):
    """connection → hasher: the file's next bytes, strictly in file byte order."""

    slot: NonNegative
    file_id: NonNegative
    length: Positive


class HashEnd(_Message, frozen=True):
    """connection → hasher: the file is complete; answer ``FileDigest``."""

    file_id: NonNegative


class Finalize(_Message, frozen=True):
    """connection → writer: the digest matched; fsync and move to the final name."""

    file_id: NonNegative


class Finalized(_Message, frozen=True):
    """writer → connection: ``path`` is the relative path actually used
    (it differs from the planned one under the ``rename`` policy)."""

    file_id: NonNegative
    path: str


class Discard(_Message, frozen=True):
    """connection → writer: delete the partial file."""

    file_id: NonNegative


class Discarded(_Message, frozen=True):
    """writer → connection: the partial file is gone."""

    file_id: NonNegative


# -- both sides ----------------------------------------------------------------


class ReleaseSlot(_Message, frozen=True):
    """A consumer is done with ``slot``; its owner may reuse it."""

    slot: NonNegative


class FileDigest(_Message, frozen=True):
    """hasher → connection: SHA-256 of exactly the ``size`` bytes hashed."""

    file_id: NonNegative
    size: NonNegative
    sha256: Sha256Hex


class WorkerError(_Message, frozen=True):
    """A fault a worker reports instead of crashing.

    ``code`` is an Appendix B.3 error code (``io_error``, ``no_space``,
    ``bad_path``, ``internal``); ``message`` is for humans and names the file.
    ``peer_message``, when set, is what the peer may be told instead: it names
    the file by its manifest path, not by where it lives on this machine.
    """

    worker: str
    code: str
    message: str
    file_id: NonNegative | None = None
    peer_message: str = ""


class Stop(_Message, frozen=True):
    """Finish: the worker cleans up and exits 0."""


Message: TypeAlias = (
    ReadChunk
    | FileRead
    | PlanFile
    | WriteChunk
    | HashChunk
    | HashEnd
    | Finalize
    | Finalized
    | Discard
    | Discarded
    | ReleaseSlot
    | FileDigest
    | WorkerError
    | Stop
)

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final[msgspec.msgpack.Decoder[Message]] = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    return _ENCODER.encode(msg)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one message; raises ``msgspec.DecodeError`` (or its subclass
    ``msgspec.ValidationError``) for anything that is not one."""
    try:
        return _DECODER.decode(data)
    except UnicodeDecodeError as exc:
        # msgspec 0.22 lets invalid UTF-8 in a MessagePack str escape as this.
        raise msgspec.DecodeError(f"invalid UTF-8 in message: {exc}") from exc


# The reader's file list, (id, absolute path, size, manifest path) in sending order,
# travels to it as msgpack batches, not pickled: pickling 100,000 tuples costs the
# sending supervisor's memo ~120 B per file at start-up (see pipeline.control.pack_params).
ReaderFile: TypeAlias = tuple[int, str, int, str]
_files_encoder: Final = msgspec.msgpack.Encoder()
_files_decoder: Final = msgspec.msgpack.Decoder(list[ReaderFile])


READER_BATCH: Final = 1024  # files per packed batch


def pack_reader_files(files: Sequence[ReaderFile]) -> list[bytes]:
    """The list packed in batches of READER_BATCH files (see :func:`iter_reader_files`)."""
    return [_files_encoder.encode(files[i : i + READER_BATCH]) for i in range(0, len(files), READER_BATCH)]


def iter_reader_files(batches: list[bytes]) -> Iterator[ReaderFile]:
    """The files of :func:`pack_reader_files`'s batches in order, one batch decoded at a
    time and taken out of ``batches`` as it is: the reader reads its files once, in
    order, so it holds ~100 B of packed list per file still to read and one batch of
    tuples, not ~430 B per file of tuples and paths."""
    batches.reverse()
    while batches:
        yield from _files_decoder.decode(batches.pop())


def unbox(box: list[bytes]) -> bytes:
    """Take the bytes out of a one-element list passed as a process argument.

    Both sides' ``Process`` objects keep their arguments for the process's whole
    life; a bare ``bytes`` argument would stay in memory with them. The child
    empties the list it was given, the parent the one it passed once the child
    has started (spawn pickles the arguments within ``start()``).
    """
    return box.pop() if box else b""
