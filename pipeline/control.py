"""Messages between a side's supervisor (the CLI process) and its connection process.

They travel as msgpack over one duplex ``multiprocessing`` pipe.  The
connection process reports what happened on the network; the supervisor owns
processes, rings, the terminal and the user's decisions::

    supervisor                              connection process
        │ ── ConnParams (process argument, packed) ► │
        │ ◄── Status("waiting for receiver") ─ │
        │ ◄── Negotiated(chunk_size)  (sender)  │   supervisor creates ring, starts reader+hasher
        │ ── RingReady(spec) ─────────────────► │
        │ ◄── Offer(files, ...)      (receiver) │   supervisor checks space/conflicts, asks the user,
        │ ── Decision(accept, spec) ──────────► │   creates ring, starts writer+hasher
        │ ◄── Progress(...) every 250 ms ────── │
        │ ── Cancel / WorkerDied ─────────────► │
        │ ◄── Finished(outcome, ...) ────────── │   then the connection process exits
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pipeline.protocol.filetable import PackedFiles
from pipeline.shm_ring import RingSpec
from workers.messages import unbox


class ConnParams(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["sender", "receiver"]
    code: str
    signal_url: str
    stun_servers: list[str]
    connect_timeout: float
    reconnect_timeout: float
    progress_timeout: float
    ordered: bool
    max_retransmits: int | None
    max_packet_life_time: int | None
    buffered_high: int
    buffered_low: int
    flight_cap: Literal["auto", "off"] | int = "auto"
    chunk_size: int
    window: int
    rto_initial: float
    rto_max: float
    ack_interval: float
    # the sender's file list (protocol.filetable: a few byte strings, not an object per file)
    files: PackedFiles | None = None
    join_wait: float = 10.0


class _Msg(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    pass


class Status(_Msg, frozen=True, kw_only=True):
    text: str


class Connected(_Msg, frozen=True, kw_only=True):
    pair: dict[str, Any] | None
    reconnect: bool


class Negotiated(_Msg, frozen=True, kw_only=True):
    chunk_size: int


class RingReady(_Msg, frozen=True, kw_only=True):
    spec: RingSpec


class Offer(_Msg, frozen=True, kw_only=True):
    files: PackedFiles  # FileTable.unpack gives the list
    chunk_size: int
    total_bytes: int


class Decision(_Msg, frozen=True, kw_only=True):
    accept: bool
    spec: RingSpec | None = None
    code: str = "rejected"
    message: str = ""


class Progress(_Msg, frozen=True, kw_only=True):
    bytes_done: int
    files_done: int
    frames_sent: int
    retransmitted: int
    buffered_amount: int
    window_in_use: int
    duplicates: int
    # The oldest file without a verdict yet (what the progress line names); -1 for none.
    current_file: int = -1


class Cancel(_Msg, frozen=True, kw_only=True):
    message: str


class WorkerDied(_Msg, frozen=True, kw_only=True):
    role: str
    exitcode: int | None


class Finished(_Msg, frozen=True, kw_only=True):
    outcome: str
    code: str | None
    message: str
    by_peer: bool
    diagnostics: dict[str, Any]
    counters: dict[str, int]


ControlMessage = Status | Connected | Negotiated | RingReady | Offer | Decision | Progress | Cancel | WorkerDied | Finished

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ControlMessage)


def encode(message: ControlMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> ControlMessage:
    message: ControlMessage = _decoder.decode(data)
    return message


def send(pipe: Any, message: ControlMessage) -> None:
    """Write one control message (small: never blocks for long)."""
    pipe.send_bytes(encode(message))


def recv(pipe: Any) -> ControlMessage:
    data: bytes = pipe.recv_bytes()
    return decode(data)


# Process arguments travel pickled, and pickling a list of 100,000 FileEntry structs
# costs its memo ~630 B per file on top of the ~85 B the list encodes to (the
# sending supervisor's peak at start-up, and twice that to unpickle in the child);
# as msgpack bytes the argument pickles as one buffer (the reader's file list:
# workers.messages.pack_reader_files).


def pack_params(params: ConnParams) -> list[bytes]:
    """The packed params in a one-element list (see ``workers.messages.unbox``)."""
    return [_encoder.encode(params)]


def unpack_params(box: list[bytes]) -> ConnParams:
    return msgspec.msgpack.decode(unbox(box), type=ConnParams)
