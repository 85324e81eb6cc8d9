"""Wire codec for Appendix B: DATA frames (B.2) and control frames (B.3).

Control frames are typed msgspec Structs tagged by ``t``; decoding is strict
about types (``"10"`` is not an int) and lenient about unknown fields, which
B.3 requires to be ignored.  Struct fields are declared in the order the
appendix's vectors use, so a decoded frame without unknown fields re-encodes
byte-for-byte.

DATA frame layout (all big-endian)::

    0      1      2             4             8             12                    20            24
    +------+------+-------------+-------------+-------------+---------------------+-------------+----------
    | kind | flags| header_len  |  file_id    | chunk_index |        seq          |   length    | payload..
    +------+------+-------------+-------------+-------------+---------------------+-------------+----------
     0x01   bit0=LAST  >= 24                                                          == len(payload) > 0

Every decode failure raises :class:`RemoteProtocolError` with the code the
appendix names (``protocol`` or ``version``); nothing else escapes.
"""

from __future__ import annotations

import struct
from typing import Annotated, Final, Literal, NamedTuple, get_args

import msgspec

from .errors import RemoteProtocolError

PROTOCOL_VERSION: Final = 1
MAX_CONTROL_FRAME: Final = 65536
DEFAULT_MAX_MESSAGE_SIZE: Final = 65536  # RFC 8841: when a side advertises none
MAX_SACK_RANGES: Final = 64

KIND_DATA: Final = 0x01
FLAG_LAST: Final = 0x01
DATA_HEADER: Final = struct.Struct(">BBHIIQI")
DATA_HEADER_LEN: Final = DATA_HEADER.size  # 24

U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec bounds must fit int64; _check_sack caps at 2^64
I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Count = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
Size = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
Positive = Annotated[int, msgspec.Meta(ge=1, lt=2**53)]
Sha256Hex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Role = Literal["sender", "receiver"]
Verdict = Literal["verified", "mismatch", "io_error"]
SeqRange = tuple[U64, U64]
# seq is a u64 on the wire, so ``cum`` and a SACK ``end`` (exclusive) reach 2^64 at most.
SEQ_END_LIMIT: Final = 2**64


class _Frame(msgspec.Struct, tag_field="t", omit_defaults=True, kw_only=True, frozen=True):
    """Base of every control frame."""


class Hello(_Frame, tag="hello", kw_only=True, frozen=True):
    v: int
    role: Role
    session: str
    max_message_size: Positive
    agent: str | None = None
    features: list[str] | None = None
    resume: bool = False


# gc=False: it holds only str and int, so it can be in no cycle; one per file in
# every process that holds the file list, 16 bytes fewer each and never scanned.
class FileEntry(msgspec.Struct, omit_defaults=True, kw_only=True, frozen=True, gc=False):
    id: U32
    path: str
    # Any JSON integer up to 64 bits decodes; B.4's range (0 <= size < 2^53) is the
    # manifest's rule, checked by ManifestAssembler so it answers ``bad_manifest``.
    size: int
    # Bounded so a hostile value cannot overflow os.utime/os.chmod on the receiver.
    mtime_ns: I64 | None = None
    mode: U32 | None = None
    sha256: Sha256Hex | None = None


class Manifest(_Frame, tag="manifest", kw_only=True, frozen=True):
    part: Count
    last: bool
    chunk_size: Positive
    total_files: Count | None = None
    total_bytes: int | None = None  # range checked by ManifestAssembler (bad_manifest), as FileEntry.size
    files: list[FileEntry]


class Accept(_Frame, tag="accept", kw_only=True, frozen=True):
    window: Positive | None = None


class Reject(_Frame, tag="reject", kw_only=True, frozen=True):
    code: str
    message: str


class Ack(_Frame, tag="ack", kw_only=True, frozen=True):
    cum: U64
    sack: list[SeqRange] | None = None


class FileEnd(_Frame, tag="file_end", kw_only=True, frozen=True):
    id: U32
    size: Size
    chunks: Count
    sha256: Sha256Hex


class FileResult(_Frame, tag="file_result", kw_only=True, frozen=True):
    id: U32
    status: Verdict
    sha256: Sha256Hex | None  # null only on io_error (checked in decode_control)


class Done(_Frame, tag="done", kw_only=True, frozen=True):
    files: Count
    bytes: Size


class DoneAck(_Frame, tag="done_ack", kw_only=True, frozen=True):
    verified: Count
    failed: Count


class Resume(_Frame, tag="resume", kw_only=True, frozen=True):
    cum: U64
    sack: list[SeqRange] | None = None


class Cancel(_Frame, tag="cancel", kw_only=True, frozen=True):
    code: str
    message: str


class Error(_Frame, tag="error", kw_only=True, frozen=True):
    code: str
    message: str


ControlFrame = (
    Hello
    | Manifest
    | Accept
    | Reject
    | Ack
    | FileEnd
    | FileResult
    | Done
    | DoneAck
    | Resume
    | Cancel
    | Error
)

_decoder: Final = msgspec.json.Decoder(ControlFrame)
_encoder: Final = msgspec.json.Encoder()
_object_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_KNOWN_FIELDS: Final = {
    cls: frozenset(f.encode_name for f in msgspec.structs.fields(cls)) | {"t"} for cls in get_args(ControlFrame)
}


def _check_sack(sack: list[SeqRange] | None, cum: int) -> None:
    if cum > SEQ_END_LIMIT:
        raise RemoteProtocolError("protocol", f"cum {cum} exceeds 2^64")
    if sack is None:
        return
    if len(sack) > MAX_SACK_RANGES:
        raise RemoteProtocolError("protocol", f"sack has {len(sack)} ranges, at most 64 allowed")
    previous_end = cum
    for first, end in sack:
        if not first < end:
            raise RemoteProtocolError("protocol", f"sack range [{first}, {end}) is empty")
        if first < previous_end:
            # Ranges start at or beyond cum (the frame at cum is not covered by
            # cum), ascending and non-overlapping; see docs/protocol.md.
            raise RemoteProtocolError("protocol", "sack ranges must be ascending, disjoint and beyond cum")
        previous_end = end
    if previous_end > SEQ_END_LIMIT:
        raise RemoteProtocolError("protocol", f"sack end {previous_end} exceeds 2^64")


def decode_control(text: str | bytes) -> ControlFrame:
    """Decode one control frame (a DataChannel text message)."""
    try:
        raw = text.encode("utf-8") if isinstance(text, str) else text
    except UnicodeEncodeError:
        # A str holding lone surrogates cannot have come off the wire as UTF-8.
        raise RemoteProtocolError("protocol", "control frame is not valid Unicode") from None
    if len(raw) > MAX_CONTROL_FRAME:
        raise RemoteProtocolError("protocol", f"control frame of {len(raw)} bytes exceeds 65536")
    try:
        frame: ControlFrame = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError("protocol", f"bad control frame: {exc}") from None
    except UnicodeDecodeError:
        # msgspec 0.22 reports invalid UTF-8 this way, not as a DecodeError.
        raise RemoteProtocolError("protocol", "control frame is not valid UTF-8") from None
    except RecursionError:
        # Deeply nested arrays/objects (e.g. in an unknown field) fit in 64 KiB.
        raise RemoteProtocolError("protocol", "control frame nests too deeply") from None
    if isinstance(frame, Hello) and frame.v != PROTOCOL_VERSION:
        raise RemoteProtocolError("version", f"protocol version {frame.v} is not supported (we speak 1)")
    if isinstance(frame, Ack | Resume):
        _check_sack(frame.sack, frame.cum)
    if isinstance(frame, FileResult) and frame.sha256 is None and frame.status != "io_error":
        raise RemoteProtocolError("protocol", f"file_result {frame.status!r} without sha256 (null only on io_error)")
    if (
        isinstance(frame, Manifest)
        and frame.part == 0
        and (frame.total_files is None or frame.total_bytes is None)
    ):
        raise RemoteProtocolError("protocol", "manifest part 0 lacks total_files or total_bytes")
    return frame


def unknown_fields(text: str | bytes, frame: ControlFrame) -> dict[str, msgspec.Raw]:
    """The top-level fields of ``text`` that ``frame``'s type does not declare, as
    their raw JSON, in order.  B.3 makes a peer ignore them; a tool that forwards
    or re-encodes a frame passes them to :func:`encode_control` to keep them."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    known = _KNOWN_FIELDS[type(frame)]
    return {key: value for key, value in _object_decoder.decode(raw).items() if key not in known}


def encode_control(frame: ControlFrame, unknown: dict[str, msgspec.Raw] | None = None) -> str:
    """Encode a control frame as the compact JSON text sent on the channel.

    ``unknown`` (from :func:`unknown_fields`) is appended after the declared
    fields, so a decoded frame re-encodes byte-for-byte (B.7)."""
    body = _encoder.encode(frame)
    if unknown:
        extra = b"".join(b"," + _encoder.encode(key) + b":" + bytes(value) for key, value in unknown.items())
        body = body[:-1] + extra + b"}"
    return body.decode("utf-8")


def control_size(frame: ControlFrame | FileEntry) -> int:
    """Encoded size in bytes (used to page manifests under 65536)."""
    return len(_encoder.encode(frame))


class DataFrame(NamedTuple):
    file_id: int
    chunk_index: int
    seq: int
    last: bool
    payload: memoryview


def decode_data(message: bytes | bytearray | memoryview) -> DataFrame:
    """Parse and validate a DATA frame; the payload is a view, not a copy."""
    view = memoryview(message)
    if len(view) < DATA_HEADER_LEN:
        raise RemoteProtocolError("protocol", f"DATA frame of {len(view)} bytes is shorter than its header")
    kind, flags, header_len, file_id, chunk_index, seq, length = DATA_HEADER.unpack_from(view)
    if kind != KIND_DATA:
        raise RemoteProtocolError("protocol", f"unknown binary frame kind 0x{kind:02x}")
    if flags & ~FLAG_LAST:
        raise RemoteProtocolError("protocol", f"reserved DATA flag bits set (0x{flags:02x})")
    if header_len < DATA_HEADER_LEN:
        raise RemoteProtocolError("protocol", f"DATA header_len {header_len} is below 24")
    if header_len > len(view):
        raise RemoteProtocolError("protocol", f"DATA header_len {header_len} exceeds the message")
    if length == 0:
        raise RemoteProtocolError("protocol", "DATA frame with an empty payload")
    if length != len(view) - header_len:
        raise RemoteProtocolError(
            "protocol", f"DATA length field {length} != payload bytes {len(view) - header_len}"
        )
    return DataFrame(file_id, chunk_index, seq, bool(flags & FLAG_LAST), view[header_len:])


def pack_data_header_into(
    buffer: memoryview | bytearray, offset: int, file_id: int, chunk_index: int, seq: int, last: bool, length: int
) -> None:
    """Write a version-1 DATA header in place (the payload follows it)."""
    DATA_HEADER.pack_into(
        buffer, offset, KIND_DATA, FLAG_LAST if last else 0, DATA_HEADER_LEN, file_id, chunk_index, seq, length
    )


def encode_data(file_id: int, chunk_index: int, seq: int, last: bool, payload: bytes | memoryview) -> bytes:
    """Build a whole DATA frame as ``bytes`` (what ``RTCDataChannel.send`` accepts)."""
    header = DATA_HEADER.pack(
        KIND_DATA, FLAG_LAST if last else 0, DATA_HEADER_LEN, file_id, chunk_index, seq, len(payload)
    )
    return header + bytes(payload)
