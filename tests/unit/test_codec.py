"""DATA and control frame codecs fed whole, byte by byte, and with junk."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.protocol.errors import RemoteProtocolError
from pipeline.protocol.frames import (
    DATA_HEADER_LEN,
    MAX_CONTROL_FRAME,
    MAX_SACK_RANGES,
    Accept,
    Ack,
    Cancel,
    ControlFrame,
    Done,
    DoneAck,
    Error,
    FileEnd,
    FileEntry,
    FileResult,
    Hello,
    Manifest,
    Reject,
    Resume,
    decode_control,
    decode_data,
    encode_control,
    encode_data,
    pack_data_header_into,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "appendix-b-vectors.json").read_text("utf-8")
)
VALID_DATA = [bytes.fromhex(v["hex"]) for v in VECTORS["data_frames_valid"]]
VALID_CONTROL: list[str] = VECTORS["control_frames_valid"]

U32_MAX = 2**32 - 1
SEQ_MAX = 2**64 - 1  # seq is a u64 on the wire
BELOW_2_53 = 2**53 - 1


# --- byte-by-byte -----------------------------------------------------------


@pytest.mark.parametrize("raw", VALID_DATA, ids=lambda r: r.hex()[:16])
def test_every_strict_prefix_of_a_data_frame_is_rejected(raw: bytes) -> None:
    for end in range(len(raw)):
        with pytest.raises(RemoteProtocolError) as info:
            decode_data(raw[:end])
        assert info.value.code == "protocol", end


@pytest.mark.parametrize("raw", VALID_DATA, ids=lambda r: r.hex()[:16])
def test_data_frame_with_one_byte_too_many_is_rejected(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_data(raw + b"\x00")


@pytest.mark.parametrize("raw", VALID_DATA, ids=lambda r: r.hex()[:16])
def test_data_frame_decodes_from_bytearray_and_memoryview(raw: bytes) -> None:
    expected = decode_data(raw)
    assert decode_data(bytearray(raw)) == expected
    assert decode_data(memoryview(raw)) == expected


@pytest.mark.parametrize("text", VALID_CONTROL, ids=lambda t: json.loads(t)["t"])
def test_every_strict_prefix_of_a_control_frame_is_rejected(text: str) -> None:
    # A strict prefix of a JSON object is never a complete JSON object.
    raw = text.encode("utf-8")
    for end in range(len(raw)):
        with pytest.raises(RemoteProtocolError) as info:
            decode_control(raw[:end])
        assert info.value.code == "protocol", end
    for end in range(len(text)):
        with pytest.raises(RemoteProtocolError):
            decode_control(text[:end])


# --- junk -------------------------------------------------------------------


def _decode_data_or_reject(raw: bytes) -> None:
    try:
        frame = decode_data(raw)
    except RemoteProtocolError as exc:
        assert exc.code == "protocol"
    else:
        assert len(frame.payload) > 0
        assert len(raw) >= DATA_HEADER_LEN + len(frame.payload)


def _decode_control_or_reject(message: str | bytes) -> None:
    try:
        decode_control(message)
    except RemoteProtocolError as exc:
        assert exc.code in ("protocol", "version")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_to_decode_data(raw: bytes) -> None:
    _decode_data_or_reject(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=DATA_HEADER_LEN, max_size=DATA_HEADER_LEN),
    st.binary(max_size=64),
)
def test_header_shaped_junk_to_decode_data(header: bytes, payload: bytes) -> None:
    # Mostly valid kind/flags so the later checks are reached too.
    _decode_data_or_reject(b"\x01" + header[1:] + payload)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_text_and_bytes_to_decode_control(message: str | bytes) -> None:
    _decode_control_or_reject(message)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_TAGS = st.sampled_from(
    [
        "hello",
        "manifest",
        "accept",
        "reject",
        "ack",
        "file_end",
        "file_result",
        "done",
        "done_ack",
        "resume",
        "cancel",
        "error",
        "teleport",
    ]
)
_FIELDS = st.sampled_from(
    [
        "v",
        "role",
        "session",
        "max_message_size",
        "part",
        "last",
        "chunk_size",
        "total_files",
        "total_bytes",
        "files",
        "window",
        "code",
        "message",
        "cum",
        "sack",
        "id",
        "size",
        "chunks",
        "sha256",
        "status",
        "bytes",
        "verified",
        "failed",
        "agent",
        "features",
        "resume",
        "path",
    ]
)


@settings(max_examples=400, deadline=None)
@given(_TAGS, st.dictionaries(_FIELDS, _JSON, max_size=8))
def test_json_objects_with_known_tags_to_decode_control(tag: str, fields: dict[str, Any]) -> None:
    _decode_control_or_reject(json.dumps({"t": tag, **fields}))


@pytest.mark.parametrize(
    "message",
    [
        "\ud800",  # lone surrogate: cannot be encoded as UTF-8
        b'{"t":"error","code":"x","message":"\xff"}',  # invalid UTF-8
        '{"t":"error","code":"x","message":"\\ud800"}',  # escaped lone surrogate
        '{"t":"error","code":"x","message":"m","later":' + "[" * 5000 + "]" * 5000 + "}",
        '{"t":"error","code":"x","message":"m","later":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
        '{"t":"ack","cum":' + str(2**64 + 1) + "}",
        '{"t":"ack","cum":1,"sack":[[2,' + str(2**64 + 1) + "]]}",
        '{"t":"manifest","part":0,"last":true,"chunk_size":1,"total_files":1,"total_bytes":0,'
        '"files":[{"id":0,"path":"a","size":0,"mtime_ns":' + str(2**63) + "}]}",
        '{"t":"manifest","part":0,"last":true,"chunk_size":1,"files":[]}',  # part 0 without totals
        '{"t":"hello","v":true,"role":"sender","session":"s","max_message_size":1}',
        '{"t":"ack","cum":1.0}',
        "",
        "{}",
        "null",
    ],
)
def test_hostile_control_frames_raise_only_remote_protocol_error(message: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_control(message)
    assert info.value.code == "protocol"


def test_sequence_numbers_up_to_two_to_the_64_are_accepted() -> None:
    frame = decode_control('{"t":"ack","cum":' + str(2**64) + "}")
    assert isinstance(frame, Ack)
    assert frame.cum == 2**64


# --- round trips ------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    file_id=st.integers(0, U32_MAX),
    chunk_index=st.integers(0, U32_MAX),
    seq=st.integers(0, SEQ_MAX),
    last=st.booleans(),
    payload=st.binary(min_size=1, max_size=2000),
)
def test_data_frame_round_trip(
    file_id: int, chunk_index: int, seq: int, last: bool, payload: bytes
) -> None:
    raw = encode_data(file_id, chunk_index, seq, last, payload)
    assert len(raw) == DATA_HEADER_LEN + len(payload)
    frame = decode_data(raw)
    assert (frame.file_id, frame.chunk_index, frame.seq, frame.last) == (
        file_id,
        chunk_index,
        seq,
        last,
    )
    assert bytes(frame.payload) == payload

    # The in-place header writer produces the same bytes.
    buffer = bytearray(8 + len(raw))
    pack_data_header_into(buffer, 8, file_id, chunk_index, seq, last, len(payload))
    buffer[8 + DATA_HEADER_LEN :] = payload
    assert bytes(buffer[8:]) == raw


_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_SHA = st.binary(min_size=32, max_size=32).map(bytes.hex)
_COUNT = st.integers(0, BELOW_2_53)
_POSITIVE = st.integers(1, BELOW_2_53)
_U32 = st.integers(0, U32_MAX)


@st.composite
def _sack(draw: st.DrawFn, cum: int) -> list[tuple[int, int]] | None:
    if draw(st.booleans()):
        return None
    # Valid sacks end at or below 2^64 (frames.py SEQ_END_LIMIT); near the top of
    # the seq space cum + 10,000 would not be one.
    top = min(cum + 10_000, 2**64)
    bounds = sorted(draw(st.sets(st.integers(cum + 1, top), max_size=2 * MAX_SACK_RANGES)))
    if len(bounds) % 2:
        bounds.pop()
    return [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2)]


@st.composite
def _ack_like(draw: st.DrawFn, cls: type[Ack] | type[Resume]) -> Ack | Resume:
    cum = draw(st.integers(0, SEQ_MAX))
    return cls(cum=cum, sack=draw(_sack(cum)))


_FILE_ENTRY = st.builds(
    FileEntry,
    id=_U32,
    path=_TEXT,
    size=_COUNT,
    mtime_ns=st.none() | st.integers(-(2**63), 2**63 - 1),
    mode=st.none() | _U32,
    sha256=st.none() | _SHA,
)


@st.composite
def _manifest(draw: st.DrawFn) -> Manifest:
    part = draw(_COUNT)
    first = part == 0
    return Manifest(
        part=part,
        last=draw(st.booleans()),
        chunk_size=draw(_POSITIVE),
        total_files=draw(_COUNT) if first else draw(st.none() | _COUNT),
        total_bytes=draw(_COUNT) if first else draw(st.none() | _COUNT),
        files=draw(st.lists(_FILE_ENTRY, max_size=5)),
    )


_STRATEGIES: dict[type[ControlFrame], st.SearchStrategy[Any]] = {
    Hello: st.builds(
        Hello,
        v=st.just(1),
        role=st.sampled_from(["sender", "receiver"]),
        session=_TEXT,
        max_message_size=_POSITIVE,
        agent=st.none() | _TEXT,
        features=st.none() | st.lists(_TEXT, max_size=4),
        resume=st.booleans(),
    ),
    Manifest: _manifest(),
    Accept: st.builds(Accept, window=st.none() | _POSITIVE),
    Reject: st.builds(Reject, code=_TEXT, message=_TEXT),
    Ack: _ack_like(Ack),
    FileEnd: st.builds(FileEnd, id=_U32, size=_COUNT, chunks=_COUNT, sha256=_SHA),
    FileResult: st.builds(FileResult, id=_U32, status=st.sampled_from(["verified", "mismatch"]), sha256=_SHA)
    | st.builds(FileResult, id=_U32, status=st.just("io_error"), sha256=st.none() | _SHA),
    Done: st.builds(Done, files=_COUNT, bytes=_COUNT),
    DoneAck: st.builds(DoneAck, verified=_COUNT, failed=_COUNT),
    Resume: _ack_like(Resume),
    Cancel: st.builds(Cancel, code=_TEXT, message=_TEXT),
    Error: st.builds(Error, code=_TEXT, message=_TEXT),
}
_CONTROL_FRAMES: st.SearchStrategy[ControlFrame] = st.one_of(*_STRATEGIES.values())


@settings(max_examples=400, deadline=None)
@given(_CONTROL_FRAMES)
def test_control_frame_round_trip(frame: ControlFrame) -> None:
    text = encode_control(frame)
    assert decode_control(text) == frame
    assert decode_control(text.encode("utf-8")) == frame
    assert encode_control(decode_control(text)) == text


@pytest.mark.parametrize("status", ["verified", "mismatch"])
def test_a_verdict_on_data_carries_the_receivers_digest(status: str) -> None:
    # B.3: sha256 "may be null on io_error" - and only there.
    with pytest.raises(RemoteProtocolError) as info:
        decode_control(json.dumps({"t": "file_result", "id": 0, "status": status, "sha256": None}))
    assert info.value.code == "protocol"
    io_error = decode_control('{"t":"file_result","id":0,"status":"io_error","sha256":null}')
    assert isinstance(io_error, FileResult) and io_error.sha256 is None


def test_round_trip_strategies_cover_every_frame_type() -> None:
    assert set(_STRATEGIES) == set(typing.get_args(ControlFrame))


# --- size limit -------------------------------------------------------------


def _error_of_size(size: int) -> str:
    base = encode_control(Error(code="internal", message=""))
    text = encode_control(Error(code="internal", message="x" * (size - len(base))))
    assert len(text.encode("utf-8")) == size
    return text


def test_control_frame_of_exactly_65536_bytes_is_accepted() -> None:
    assert isinstance(decode_control(_error_of_size(MAX_CONTROL_FRAME)), Error)


@pytest.mark.parametrize("size", [MAX_CONTROL_FRAME + 1, 200_000])
def test_oversize_control_frame_is_rejected(size: int) -> None:
    text = _error_of_size(size)
    for message in (text, text.encode("utf-8")):
        with pytest.raises(RemoteProtocolError) as info:
            decode_control(message)
        assert info.value.code == "protocol"


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    base = len(encode_control(Error(code="internal", message="")))
    text = encode_control(
        Error(code="internal", message="é" * ((MAX_CONTROL_FRAME - base) // 2 + 1))
    )
    assert len(text) <= MAX_CONTROL_FRAME < len(text.encode("utf-8"))
    with pytest.raises(RemoteProtocolError):
        decode_control(text)


# --- SACK -------------------------------------------------------------------


def _ranges(pairs: list[tuple[int, int]]) -> str:
    return json.dumps([list(p) for p in pairs])


@pytest.mark.parametrize("tag", ["ack", "resume"])
@pytest.mark.parametrize(
    ("cum", "sack"),
    [
        pytest.param(
            0, [(2 * i + 1, 2 * i + 2) for i in range(MAX_SACK_RANGES + 1)], id="65 ranges"
        ),
        pytest.param(10, [(12, 15), (14, 20)], id="overlapping"),
        pytest.param(10, [(20, 21), (12, 15)], id="descending"),
        pytest.param(10, [(12, 12)], id="empty range"),
        pytest.param(10, [(15, 12)], id="inverted range"),
        pytest.param(10, [(9, 12)], id="starts below cum"),
        pytest.param(10, [(5, 8)], id="below cum"),
    ],
)
def test_bad_sack_is_rejected(tag: str, cum: int, sack: list[tuple[int, int]]) -> None:
    text = f'{{"t":"{tag}","cum":{cum},"sack":{_ranges(sack)}}}'
    with pytest.raises(RemoteProtocolError) as info:
        decode_control(text)
    assert info.value.code == "protocol"


@pytest.mark.parametrize("tag", ["ack", "resume"])
@pytest.mark.parametrize(
    ("cum", "sack"),
    [
        pytest.param(0, [(2 * i + 1, 2 * i + 2) for i in range(MAX_SACK_RANGES)], id="64 ranges"),
        # Touching ranges do not overlap, and a frame at seq == cum may be held
        # but not yet handed to the writer (frames.py _check_sack).
        pytest.param(10, [(12, 15), (15, 20)], id="touching"),
        pytest.param(10, [(10, 12)], id="starts at cum"),
        pytest.param(10, [], id="empty list"),
    ],
)
def test_good_sack_is_accepted(tag: str, cum: int, sack: list[tuple[int, int]]) -> None:
    frame = decode_control(f'{{"t":"{tag}","cum":{cum},"sack":{_ranges(sack)}}}')
    assert isinstance(frame, Ack | Resume)
    assert frame.sack == sack
