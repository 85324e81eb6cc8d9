"""Manifest paging and reassembly (Appendix B.3 ``manifest``, B.4)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.protocol.errors import LocalProtocolError, RemoteProtocolError
from pipeline.protocol.frames import (
    MAX_CONTROL_FRAME,
    FileEntry,
    Manifest,
    control_size,
    decode_control,
    encode_control,
)
from pipeline.protocol.manifest import (
    ManifestAssembler,
    build_manifest_parts,
    chunk_count,
    chunk_length,
)

CHUNK = 65536 - 24


def _encoded_size(part: Manifest) -> int:
    return len(encode_control(part).encode("utf-8"))


def _entries(paths: Sequence[str], size: int = 10) -> list[FileEntry]:
    return [FileEntry(id=i, path=p, size=size) for i, p in enumerate(paths)]


def _over_the_wire(parts: Sequence[Manifest]) -> list[Manifest]:
    decoded = [decode_control(encode_control(p)) for p in parts]
    assert all(isinstance(p, Manifest) for p in decoded)
    return [p for p in decoded if isinstance(p, Manifest)]


def _assemble(parts: Sequence[Manifest], **kwargs: int) -> tuple[FileEntry, ...] | None:
    assembler = ManifestAssembler(**kwargs)
    result = None
    for index, part in enumerate(parts):
        result = assembler.add(part)
        assert (result is None) is (index < len(parts) - 1)
    return result


def _manifest(
    files: list[FileEntry],
    *,
    part: int = 0,
    last: bool = True,
    chunk_size: int = 1024,
    total_files: int | None = None,
    total_bytes: int | None = None,
) -> Manifest:
    if part == 0:
        total_files = len(files) if total_files is None else total_files
        total_bytes = sum(f.size for f in files) if total_bytes is None else total_bytes
    return Manifest(
        part=part,
        last=last,
        chunk_size=chunk_size,
        total_files=total_files,
        total_bytes=total_bytes,
        files=files,
    )


def _reject(parts: Sequence[Manifest], code: str, words: str, **kwargs: int) -> None:
    assembler = ManifestAssembler(**kwargs)
    with pytest.raises(RemoteProtocolError) as info:
        for part in parts:
            assembler.add(part)
    assert info.value.code == code
    assert words in info.value.message
    with pytest.raises(LocalProtocolError):
        assembler.add(parts[0])


# --- chunk arithmetic -------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk_size", "count"),
    [
        (0, 10, 0),
        (1, 10, 1),
        (9, 10, 1),
        (10, 10, 1),
        (11, 10, 2),
        (100, 10, 10),
        (2**53 - 1, 1 << 16, 2**37),
    ],
)
def test_chunk_count(size: int, chunk_size: int, count: int) -> None:
    assert chunk_count(size, chunk_size) == count


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20_000), st.integers(1, 5000))
def test_chunk_lengths_cover_the_file(size: int, chunk_size: int) -> None:
    count = chunk_count(size, chunk_size)
    lengths = [chunk_length(size, chunk_size, i) for i in range(count)]
    assert sum(lengths) == size
    assert all(length == chunk_size for length in lengths[:-1])
    assert all(0 < length <= chunk_size for length in lengths)


@pytest.mark.parametrize(
    ("size", "chunk_size", "index"), [(0, 10, 0), (10, 10, 1), (11, 10, 2), (5, 10, -1)]
)
def test_chunk_length_out_of_range(size: int, chunk_size: int, index: int) -> None:
    with pytest.raises(ValueError):
        chunk_length(size, chunk_size, index)


@pytest.mark.parametrize(("size", "chunk_size"), [(-1, 10), (10, 0)])
def test_chunk_count_bad_arguments(size: int, chunk_size: int) -> None:
    with pytest.raises(ValueError):
        chunk_count(size, chunk_size)


# --- paging -----------------------------------------------------------------


def test_empty_file_list_is_one_part() -> None:
    (part,) = build_manifest_parts([], CHUNK)
    assert part == Manifest(
        part=0, last=True, chunk_size=CHUNK, total_files=0, total_bytes=0, files=[]
    )
    assert _assemble(_over_the_wire([part])) == ()


def test_small_list_is_one_part() -> None:
    files = _entries(["a", "b/c", "d"])
    (part,) = build_manifest_parts(files, CHUNK)
    assert part.files == files and part.last and part.total_files == 3 and part.total_bytes == 30
    assert _assemble(_over_the_wire([part])) == tuple(files)


def _long_unicode_paths(count: int) -> list[str]:
    # ~600 UTF-8 bytes each, multi-byte, with quotes that JSON must escape.
    stem = '写真/2024年/旅行"quoted"/' + "é" * 120 + "/" + "дом" * 40
    return [f"{stem}/{i:06d}-ファイル.jpg" for i in range(count)]


def test_100k_entries_page_under_the_frame_limit_and_reassemble() -> None:
    files = [
        FileEntry(id=i, path=p, size=i * 7919 % 100_003, mtime_ns=1_700_000_000_000_000_000 + i)
        for i, p in enumerate(_long_unicode_paths(100_000))
    ]
    parts = build_manifest_parts(files, CHUNK)
    assert len(parts) > 100
    sizes = [_encoded_size(p) for p in parts]
    assert max(sizes) <= MAX_CONTROL_FRAME
    assert [p.part for p in parts] == list(range(len(parts)))
    assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[0].total_files == 100_000
    assert parts[0].total_bytes == sum(f.size for f in files)
    assert all(p.total_files is None and p.total_bytes is None for p in parts[1:])
    assert all(p.chunk_size == CHUNK for p in parts)
    # Packed tightly: the next entry would not have fitted in any full part.
    for size, following in zip(sizes, parts[1:], strict=False):
        assert size + 1 + control_size(following.files[0]) > MAX_CONTROL_FRAME
    assert _assemble(_over_the_wire(parts)) == tuple(files)


@pytest.mark.parametrize("max_frame_size", [4096, 20_000])
def test_smaller_negotiated_frame_size_is_respected(max_frame_size: int) -> None:
    files = _entries(_long_unicode_paths(300))
    parts = build_manifest_parts(files, 16_000, max_frame_size=max_frame_size)
    assert all(_encoded_size(p) <= max_frame_size for p in parts)
    assert _assemble(_over_the_wire(parts), max_chunk_size=16_000) == tuple(files)


def test_frame_size_is_capped_at_65536() -> None:
    files = _entries(_long_unicode_paths(1000))
    parts = build_manifest_parts(files, CHUNK, max_frame_size=10**6)
    assert all(_encoded_size(p) <= MAX_CONTROL_FRAME for p in parts)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=300), max_size=60),
    st.integers(400, 3000),
)
def test_parts_never_exceed_the_budget(names: list[str], max_frame_size: int) -> None:
    files = [FileEntry(id=i, path=name, size=i) for i, name in enumerate(names)]
    try:
        parts = build_manifest_parts(files, 1024, max_frame_size=max_frame_size)
    except LocalProtocolError:
        # Only when some entry cannot fit even alone in a frame.
        overhead = _encoded_size(
            _manifest([], last=False, total_files=len(files), total_bytes=10**9)
        )
        assert any(control_size(f) + overhead > max_frame_size for f in files)
        return
    assert all(_encoded_size(p) <= max_frame_size for p in parts)
    assert [f for p in parts for f in p.files] == files
    assert parts[-1].last and not any(p.last for p in parts[:-1])


def test_entry_larger_than_a_frame_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        build_manifest_parts(_entries(["x" * 5000]), 1024, max_frame_size=4096)


def test_ids_out_of_order_are_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        build_manifest_parts([FileEntry(id=1, path="a", size=0)], 1024)


# --- assembler --------------------------------------------------------------


def _three_parts() -> list[Manifest]:
    files = _entries(["a", "b", "c", "d", "e"])
    return [
        _manifest(files[:2], last=False),
        _manifest(files[2:4], part=1, last=False),
        _manifest(files[4:], part=2),
    ]


def test_assembler_accepts_parts_in_order() -> None:
    parts = _three_parts()
    # Part 0 carries the whole list's totals.
    parts[0] = _manifest(parts[0].files, last=False, total_files=5, total_bytes=50)
    assembler = ManifestAssembler()
    assert assembler.add(parts[0]) is None
    assert assembler.chunk_size == 1024 and assembler.total_bytes == 50
    assert assembler.add(parts[1]) is None
    assert not assembler.complete
    assert assembler.add(parts[2]) == tuple(_entries(["a", "b", "c", "d", "e"]))
    assert assembler.complete


def _totals(parts: list[Manifest]) -> list[Manifest]:
    files = [f for p in parts for f in p.files]
    first = _manifest(
        parts[0].files,
        last=parts[0].last,
        chunk_size=parts[0].chunk_size,
        total_files=len(files),
        total_bytes=sum(f.size for f in files),
    )
    return [first, *parts[1:]]


def test_part_out_of_sequence() -> None:
    parts = _totals(_three_parts())
    _reject([parts[0], parts[2]], "bad_manifest", "part 2 where part 1")
    _reject([parts[1]], "bad_manifest", "part 1 where part 0")
    _reject([parts[0], parts[0]], "bad_manifest", "part 0 where part 1")


def test_part_after_last() -> None:
    files = _entries(["a"])
    _reject([_manifest(files), _manifest([], part=1)], "bad_manifest", "after the last part")


def test_chunk_size_changes_between_parts() -> None:
    parts = _totals(_three_parts())
    changed = _manifest(parts[1].files, part=1, last=False, chunk_size=2048)
    _reject([parts[0], changed], "bad_manifest", "chunk_size")


def test_totals_change_between_parts() -> None:
    parts = _totals(_three_parts())
    changed = _manifest(parts[1].files, part=1, last=False, total_files=6)
    _reject([parts[0], changed], "bad_manifest", "totals")


def test_chunk_size_above_the_negotiated_maximum_is_protocol() -> None:
    files = _entries(["a"])
    _reject([_manifest(files, chunk_size=65513)], "protocol", "chunk_size")
    assert _assemble([_manifest(files, chunk_size=65512)]) == tuple(files)
    _reject([_manifest(files, chunk_size=4097)], "protocol", "chunk_size", max_chunk_size=4096)
    _reject([_manifest(files, chunk_size=0)], "protocol", "chunk_size")


def test_part_0_without_totals_is_protocol() -> None:
    bare = Manifest(part=0, last=True, chunk_size=1024, files=[])
    _reject([bare], "protocol", "total_files")


@pytest.mark.parametrize(
    "ids",
    [[1, 2, 3], [0, 2, 3], [0, 1, 1], [0, 0, 1], [2, 1, 0]],
)
def test_ids_not_exactly_0_to_n_minus_1_in_order(ids: list[int]) -> None:
    files = [FileEntry(id=i, path=f"f{n}", size=1) for n, i in enumerate(ids)]
    _reject([_manifest(files)], "bad_manifest", "file id")


def test_ids_continue_across_parts() -> None:
    first = _entries(["a", "b"])
    restart = [FileEntry(id=0, path="c", size=10)]
    _reject(
        [_manifest(first, last=False, total_files=3, total_bytes=30), _manifest(restart, part=1)],
        "bad_manifest",
        "file id 0 where 2",
    )


@pytest.mark.parametrize(
    ("total_files", "total_bytes", "words"),
    [
        (4, 30, "total_files"),
        (2, 30, "more than the announced"),
        (3, 31, "total_bytes"),
        (3, 29, "total_bytes"),
    ],
)
def test_totals_must_match_the_entries(total_files: int, total_bytes: int, words: str) -> None:
    files = _entries(["a", "b", "c"])
    _reject(
        [_manifest(files, total_files=total_files, total_bytes=total_bytes)], "bad_manifest", words
    )


def test_too_many_files_is_refused_before_they_arrive() -> None:
    files = _entries(["a", "b", "c"])
    _reject([_manifest(files, last=False)], "bad_manifest", "at most 2", max_files=2)
    assert _assemble([_manifest(files)], max_files=3) == tuple(files)


def test_default_file_limit_is_one_million() -> None:
    _reject(
        [_manifest([], last=False, total_files=1_000_001, total_bytes=0)],
        "bad_manifest",
        "at most 1000000",
    )
    assert (
        ManifestAssembler().add(_manifest([], last=False, total_files=1_000_000, total_bytes=0))
        is None
    )


@pytest.mark.parametrize("size", [2**53, -1, 2**63 - 1])
def test_a_size_outside_0_to_2_to_the_53_is_bad_manifest(size: int) -> None:
    # B.4: sizes are non-negative integers below 2^53.  Off the wire too: the
    # decoder takes any 64-bit integer and leaves the range to the assembler.
    files = [FileEntry(id=0, path="huge", size=size)]
    _reject([_manifest(files, total_bytes=0)], "bad_manifest", "size")
    decoded = decode_control(encode_control(_manifest(files, total_bytes=0)))
    assert isinstance(decoded, Manifest)
    _reject([decoded], "bad_manifest", "size")
    largest = [FileEntry(id=0, path="huge", size=2**53 - 1)]
    assert _assemble([_manifest(largest)]) == tuple(largest)


@pytest.mark.parametrize("total_bytes", [2**53, -1])
def test_total_bytes_outside_the_range_is_bad_manifest(total_bytes: int) -> None:
    _reject([_manifest([], total_bytes=total_bytes)], "bad_manifest", "total_bytes")


def test_bad_path_in_a_later_part_rejects_the_whole_manifest() -> None:
    parts = _totals(_three_parts())
    bad = _manifest([FileEntry(id=4, path="../escape", size=10)], part=2)
    assert parts[2].files[0].id == 4
    assembler = ManifestAssembler()
    assert assembler.add(parts[0]) is None
    assert assembler.add(parts[1]) is None
    with pytest.raises(RemoteProtocolError) as info:
        assembler.add(bad)
    assert info.value.code == "bad_path"
    assert "'../escape'" in info.value.message
    assert not assembler.complete


def test_conflict_spanning_parts_is_bad_path() -> None:
    first = [FileEntry(id=0, path="dir", size=1)]
    second = [FileEntry(id=1, path="dir/file", size=1)]
    _reject(
        [_manifest(first, last=False, total_files=2, total_bytes=2), _manifest(second, part=1)],
        "bad_path",
        "dir/file",
    )
