"""FileTable: the manifest's file list in flat arrays, equal to the entries it took."""

from __future__ import annotations

import tracemalloc

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.protocol.filetable import FileTable, PackedFiles
from pipeline.protocol.frames import FileEntry

_ENTRY_FIELDS = st.tuples(
    st.text(min_size=1, max_size=12),
    st.integers(min_value=0, max_value=2**53 - 1),
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none() | st.integers(min_value=0, max_value=2**32 - 1),
    st.none() | st.just("ab" * 32),
)


def _entries(fields: list[tuple[str, int, int | None, int | None, str | None]]) -> list[FileEntry]:
    return [
        FileEntry(id=i, path=path, size=size, mtime_ns=mtime, mode=mode, sha256=digest)
        for i, (path, size, mtime, mode, digest) in enumerate(fields)
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(_ENTRY_FIELDS, max_size=20))
def test_table_gives_back_exactly_the_entries(
    fields: list[tuple[str, int, int | None, int | None, str | None]],
) -> None:
    entries = _entries(fields)
    table = FileTable(entries)
    assert len(table) == len(entries)
    assert list(table) == entries
    assert [table[i] for i in range(len(entries))] == entries
    assert list(table.paths) == [e.path for e in entries]
    assert [table.size(i) for i in range(len(entries))] == [e.size for e in entries]
    assert table.total_bytes == sum(e.size for e in entries)
    assert table == entries and table == FileTable(entries)
    # Across a process boundary: msgpack of the packed arrays.
    wire = msgspec.msgpack.encode(table.pack())
    again = FileTable.unpack(msgspec.msgpack.decode(wire, type=PackedFiles))
    assert again == table and list(again) == entries and again.total_bytes == table.total_bytes
    if entries:
        assert table[-1] == entries[-1]
        assert table[1:] == entries[1:]


def test_a_changed_entry_makes_tables_unequal() -> None:
    entries = _entries([("a", 1, None, None, None), ("b/c", 2, 5, 0o644, None)])
    table = FileTable(entries)
    for changed in (
        [entries[0], FileEntry(id=1, path="b/d", size=2, mtime_ns=5, mode=0o644)],
        [entries[0], FileEntry(id=1, path="b/c", size=3, mtime_ns=5, mode=0o644)],
        [entries[0], FileEntry(id=1, path="b/c", size=2, mtime_ns=None, mode=0o644)],
        [entries[0], FileEntry(id=1, path="b/c", size=2, mtime_ns=5, mode=0o600)],
        entries[:1],
    ):
        assert FileTable(changed) != table


def test_ids_must_be_the_indexes() -> None:
    with pytest.raises(ValueError, match="file id 1 where 0"):
        FileTable([FileEntry(id=1, path="a", size=0)])


def test_out_of_range_index() -> None:
    table = FileTable(_entries([("a", 1, None, None, None)]))
    with pytest.raises(IndexError):
        table[1]
    with pytest.raises(IndexError):
        table.paths[-2]


def test_unpack_refuses_arrays_of_different_lengths() -> None:
    packed = FileTable(_entries([("a", 1, None, None, None)])).pack()
    with pytest.raises(ValueError, match="different lengths"):
        FileTable.unpack(msgspec.structs.replace(packed, flags=b""))


def _camera_dump(count: int) -> list[FileEntry]:
    return [
        FileEntry(
            id=i,
            path=f"DCIM/100CANON/IMG_{i:06d}.JPG",
            size=4096 + i,
            mtime_ns=1_700_000_000_000_000_000 + i,
            mode=0o644,
        )
        for i in range(count)
    ]


def test_memory_per_file_is_a_fraction_of_an_entry_list() -> None:
    # Allocations counted by tracemalloc (deterministic), not timed.
    tracemalloc.start()
    try:
        entries = _camera_dump(20_000)
        list_bytes = tracemalloc.get_traced_memory()[0]
        table = FileTable(entries)
        table_bytes = tracemalloc.get_traced_memory()[0] - list_bytes
    finally:
        tracemalloc.stop()
    assert len(table) == len(entries)
    assert table_bytes < list_bytes / 3, (table_bytes, list_bytes)
