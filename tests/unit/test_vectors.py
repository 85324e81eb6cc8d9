"""Every vector of Appendix B.7 (tests/vectors/appendix-b-vectors.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.protocol.errors import RemoteProtocolError
from pipeline.protocol.frames import (
    DATA_HEADER_LEN,
    FileEntry,
    Manifest,
    decode_control,
    decode_data,
    encode_control,
    encode_data,
    unknown_fields,
)
from pipeline.protocol.manifest import ManifestAssembler
from pipeline.protocol.paths import validate_manifest_paths, validate_path

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO_ROOT / "tests" / "vectors" / "appendix-b-vectors.json"
SHARED_VECTORS_PATH = REPO_ROOT.parent / "shared" / "spec" / "appendix-b-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def _named(kind: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in VECTORS[kind]]


def test_vector_file_matches_the_spec_copy() -> None:
    if not SHARED_VECTORS_PATH.exists():
        pytest.skip(f"{SHARED_VECTORS_PATH} is not present")
    assert VECTORS_PATH.read_bytes() == SHARED_VECTORS_PATH.read_bytes()


def test_every_vector_group_is_present_and_nonempty() -> None:
    for kind in (
        "data_frames_valid",
        "data_frames_invalid",
        "control_frames_valid",
        "control_frames_invalid",
        "manifest_paths_rejected",
        "manifest_paths_accepted",
    ):
        assert VECTORS[kind], kind


@pytest.mark.parametrize("vector", _named("data_frames_valid"))
def test_valid_data_frame(vector: dict[str, Any]) -> None:
    raw = bytes.fromhex(vector["hex"])
    frame = decode_data(raw)
    assert frame.file_id == vector["file_id"]
    assert frame.chunk_index == vector["chunk_index"]
    assert frame.seq == vector["seq"]
    assert frame.last is vector["last"]
    assert bytes(frame.payload) == bytes.fromhex(vector["payload_hex"])

    again = encode_data(frame.file_id, frame.chunk_index, frame.seq, frame.last, frame.payload)
    if vector.get("reencode_differs"):
        # A future, longer header is skipped on decode; we always write 24 bytes.
        assert again != raw
        assert int.from_bytes(again[2:4], "big") == DATA_HEADER_LEN
        assert len(again) == DATA_HEADER_LEN + len(frame.payload)
        assert decode_data(again) == frame
    else:
        assert again == raw


@pytest.mark.parametrize("vector", _named("data_frames_invalid"))
def test_invalid_data_frame(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_data(bytes.fromhex(vector["hex"]))
    assert info.value.code == vector["code"]


@pytest.mark.parametrize("text", VECTORS["control_frames_valid"], ids=lambda t: json.loads(t)["t"])
def test_valid_control_frame(text: str) -> None:
    frame = decode_control(text)
    assert decode_control(text.encode("utf-8")) == frame
    unknown = unknown_fields(text, frame)
    # B.7: every valid control vector re-encodes byte-for-byte, unknown fields included.
    assert encode_control(frame, unknown) == text
    if unknown:
        # B.3: the unknown fields are ignored: the frame equals the one without them.
        stripped = {k: v for k, v in json.loads(text).items() if k not in unknown}
        assert decode_control(json.dumps(stripped)) == frame
        assert json.loads(encode_control(frame)) == stripped
    else:
        assert encode_control(frame) == text


def test_some_valid_control_vector_carries_an_unknown_field() -> None:
    # Guards the branch above: the forward-compatibility vector must stay covered.
    assert any(unknown_fields(t, decode_control(t)) for t in VECTORS["control_frames_valid"])


@pytest.mark.parametrize("vector", _named("control_frames_invalid"))
def test_invalid_control_frame(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_control(vector["text"])
    assert info.value.code == vector["code"]
    with pytest.raises(RemoteProtocolError):
        decode_control(vector["text"].encode("utf-8"))


@pytest.mark.parametrize(
    "vector", VECTORS["manifest_paths_rejected"], ids=lambda v: repr(v["paths"])[:40]
)
def test_rejected_manifest_paths(vector: dict[str, Any]) -> None:
    paths: list[str] = vector["paths"]
    with pytest.raises(RemoteProtocolError) as info:
        validate_manifest_paths(paths)
    assert info.value.code == vector["code"]

    # The same list, sent as a manifest, is refused by the assembler as a whole.
    files = [FileEntry(id=i, path=p, size=1) for i, p in enumerate(paths)]
    part = Manifest(
        part=0,
        last=True,
        chunk_size=1024,
        total_files=len(files),
        total_bytes=len(files),
        files=files,
    )
    decoded = decode_control(encode_control(part))
    assert isinstance(decoded, Manifest)
    with pytest.raises(RemoteProtocolError) as info:
        ManifestAssembler().add(decoded)
    assert info.value.code == vector["code"]


@pytest.mark.parametrize("path", VECTORS["manifest_paths_accepted"], ids=lambda p: p[:40])
def test_accepted_manifest_path(path: str) -> None:
    validate_path(path)
    validate_manifest_paths([path])


def test_accepted_manifest_paths_together() -> None:
    paths = VECTORS["manifest_paths_accepted"]
    validate_manifest_paths(paths)
    files = [FileEntry(id=i, path=p, size=i) for i, p in enumerate(paths)]
    part = Manifest(
        part=0,
        last=True,
        chunk_size=1024,
        total_files=len(files),
        total_bytes=sum(range(len(files))),
        files=files,
    )
    decoded = decode_control(encode_control(part))
    assert isinstance(decoded, Manifest)
    assert ManifestAssembler().add(decoded) == tuple(files)
