"""A manifest's file list as a few flat arrays, not one object per file.

A :class:`~pipeline.protocol.frames.FileEntry` with its path string and int
objects costs ~285 bytes per file, and every process that holds the list
(both connection processes, the supervisors) held one per file: at 100,000
files that was most of what grew with the number of files (issue 13).  A
:class:`FileTable` keeps the UTF-8 of every path in one ``bytearray`` with an
array of end offsets, and sizes, mtimes and modes in ``array('q')``: about
33 bytes plus the path's length per file.  Entries are made on demand when
indexed or iterated, so code that reads ``files[i].path`` keeps working;
hot paths ask for :meth:`FileTable.size` or :meth:`FileTable.path` alone.

Ids are the indexes: a table only takes entries whose ``id`` is the next
index (B.2: "File ids are 0..n−1 in order, each once"), which the manifest
assembler has checked by then.

:class:`PackedFiles` is the table as a few byte strings, how it crosses a
process boundary (msgpack) without an object per file on either side.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import msgspec

from .frames import FileEntry

__all__ = ["FileTable", "PackedFiles"]

_HAS_MTIME = 1
_HAS_MODE = 2


class PackedFiles(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A :class:`FileTable`'s arrays as bytes (native byte order: same host)."""

    paths: bytes
    ends: bytes
    sizes: bytes
    mtimes: bytes
    modes: bytes
    flags: bytes
    # sha256 hex of the entries that carry one (optional in B.2; rare)
    digests: dict[int, str]


class PathsView(Sequence[str]):
    """The table's paths as a read-only sequence of ``str`` (decoded on access)."""

    __slots__ = ("_table",)

    def __init__(self, table: FileTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._table.path(i) for i in range(*index.indices(len(self)))]
        return self._table.path(self._table.checked(index))

    def __iter__(self) -> Iterator[str]:
        table = self._table
        return (table.path(i) for i in range(len(table)))


class FileTable(Sequence[FileEntry]):
    __slots__ = (
        "_digests",
        "_ends",
        "_flags",
        "_modes",
        "_mtimes",
        "_paths",
        "_sizes",
        "total_bytes",
    )

    def __init__(self, entries: Iterable[FileEntry] = ()) -> None:
        self._paths = bytearray()
        self._ends = array("q")
        self._sizes = array("q")
        self._mtimes = array("q")
        self._modes = array("q")
        self._flags = bytearray()
        self._digests: dict[int, str] = {}
        self.total_bytes = 0
        for entry in entries:
            self.append(entry)

    def append(self, entry: FileEntry) -> None:
        index = len(self._sizes)
        if entry.id != index:
            raise ValueError(f"file id {entry.id} where {index} was expected")
        self._paths += entry.path.encode("utf-8")
        self._ends.append(len(self._paths))
        self._sizes.append(entry.size)
        self._mtimes.append(0 if entry.mtime_ns is None else entry.mtime_ns)
        self._modes.append(0 if entry.mode is None else entry.mode)
        self._flags.append(
            (entry.mtime_ns is not None) * _HAS_MTIME | (entry.mode is not None) * _HAS_MODE
        )
        if entry.sha256 is not None:
            self._digests[index] = entry.sha256
        self.total_bytes += entry.size

    def __len__(self) -> int:
        return len(self._sizes)

    def checked(self, index: int) -> int:
        """``index`` checked and made non-negative (like a list's subscript)."""
        count = len(self._sizes)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("file table index out of range")
        return index

    def path(self, index: int) -> str:
        start = self._ends[index - 1] if index else 0
        return self._paths[start : self._ends[index]].decode("utf-8")

    def size(self, index: int) -> int:
        return self._sizes[index]

    @property
    def paths(self) -> PathsView:
        return PathsView(self)

    @overload
    def __getitem__(self, index: int) -> FileEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[FileEntry]: ...
    def __getitem__(self, index: int | slice) -> FileEntry | list[FileEntry]:
        if isinstance(index, slice):
            return [self._entry(i) for i in range(*index.indices(len(self)))]
        return self._entry(self.checked(index))

    def __iter__(self) -> Iterator[FileEntry]:
        return (self._entry(i) for i in range(len(self._sizes)))

    def _entry(self, index: int) -> FileEntry:
        flags = self._flags[index]
        return FileEntry(
            id=index,
            path=self.path(index),
            size=self._sizes[index],
            mtime_ns=self._mtimes[index] if flags & _HAS_MTIME else None,
            mode=self._modes[index] if flags & _HAS_MODE else None,
            sha256=self._digests.get(index),
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FileTable):
            return (
                self._paths == other._paths
                and self._ends == other._ends
                and self._sizes == other._sizes
                and self._flags == other._flags
                and self._mtimes == other._mtimes
                and self._modes == other._modes
                and self._digests == other._digests
            )
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"FileTable({len(self)} files, {self.total_bytes} bytes)"

    def pack(self) -> PackedFiles:
        return PackedFiles(
            paths=bytes(self._paths),
            ends=self._ends.tobytes(),
            sizes=self._sizes.tobytes(),
            mtimes=self._mtimes.tobytes(),
            modes=self._modes.tobytes(),
            flags=bytes(self._flags),
            digests=dict(self._digests),
        )

    @classmethod
    def unpack(cls, packed: PackedFiles) -> FileTable:
        table = cls()
        table._paths = bytearray(packed.paths)
        table._ends.frombytes(packed.ends)
        table._sizes.frombytes(packed.sizes)
        table._mtimes.frombytes(packed.mtimes)
        table._modes.frombytes(packed.modes)
        table._flags = bytearray(packed.flags)
        table._digests = dict(packed.digests)
        count = len(table._sizes)
        if (
            not len(table._ends)
            == len(table._mtimes)
            == len(table._modes)
            == len(table._flags)
            == count
        ):
            raise ValueError("packed file table: arrays of different lengths")
        table.total_bytes = sum(table._sizes)
        return table
