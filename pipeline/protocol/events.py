"""What the machines ask their shell to do.

A machine never performs I/O.  Every input method appends outputs to the
machine's outbox; the shell drains it with ``machine.drain()`` and carries the
outputs out *in order* (order matters: a ``file_end`` must follow its file's
last DATA frame on the channel).
"""

from __future__ import annotations

from dataclasses import dataclass

from .filetable import FileTable
from .frames import ControlFrame
from .outcome import Outcome


@dataclass(frozen=True, slots=True)
class SendControl:
    """Send this control frame on the channel."""

    frame: ControlFrame


@dataclass(frozen=True, slots=True)
class SendData:
    """Send (or resend) the DATA frame whose payload the shell holds under ``token``."""

    seq: int
    file_id: int
    chunk_index: int
    last: bool
    length: int
    token: int
    retransmission: bool


@dataclass(frozen=True, slots=True)
class ReleaseChunk:
    """Sender: the chunk under ``token`` is acknowledged; its buffer may be reused."""

    token: int


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Sender: hello exchange done; chunks must now be cut at ``chunk_size``."""

    chunk_size: int
    max_message_size: int


@dataclass(frozen=True, slots=True)
class ManifestReady:
    """Receiver: the whole manifest arrived and passed validation; decide."""

    files: FileTable
    chunk_size: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class OpenFile:
    """Receiver: prepare the partial file for ``file_id`` (before its first chunk)."""

    file_id: int


@dataclass(frozen=True, slots=True)
class StoreChunk:
    """Receiver: copy ``payload`` out of the message and hand it to the writer.

    The payload is a view into the received message: the shell must copy it
    before the message is released.  Report ``chunk_stored(seq)`` once the
    writer (and the hasher) are done with it.
    """

    seq: int
    file_id: int
    chunk_index: int
    offset: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class HashChunk:
    """Receiver: hash the stored chunk ``seq``; emitted strictly in file byte order."""

    seq: int
    file_id: int


@dataclass(frozen=True, slots=True)
class HashEnd:
    """Receiver: every byte of ``file_id`` was handed to the hasher; report its digest."""

    file_id: int


@dataclass(frozen=True, slots=True)
class FinalizeFile:
    """Receiver: digests match; flush and atomically rename, then ``file_finalized``."""

    file_id: int


@dataclass(frozen=True, slots=True)
class DiscardFile:
    """Receiver: delete the partial file of ``file_id``."""

    file_id: int


@dataclass(frozen=True, slots=True)
class FileVerdict:
    """Either side: a file reached its verdict (for progress reporting)."""

    file_id: int
    status: str


@dataclass(frozen=True, slots=True)
class Terminated:
    """The session reached its one terminal outcome."""

    outcome: Outcome
    code: str | None
    message: str
    by_peer: bool


Output = (
    SendControl
    | SendData
    | ReleaseChunk
    | Negotiated
    | ManifestReady
    | OpenFile
    | StoreChunk
    | HashChunk
    | HashEnd
    | FinalizeFile
    | DiscardFile
    | FileVerdict
    | Terminated
)
