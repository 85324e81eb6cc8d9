"""Manifest paging (sender) and reassembly (receiver), Appendix B.3/B.4.

A manifest too long for one 64 KiB control frame travels as parts::

    part 0: {t, part=0, last, chunk_size, total_files, total_bytes, files=[0..k)}
    part 1: {t, part=1, last, chunk_size, files=[k..m)}
    ...
    part p: {..., last=true, files=[..n)}

The receiver accepts nothing until the last part has arrived and the whole
list has passed every check, so a bad entry anywhere rejects the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .errors import LocalProtocolError, RemoteProtocolError
from .filetable import FileTable
from .frames import (
    DATA_HEADER_LEN,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CONTROL_FRAME,
    FileEntry,
    Manifest,
    control_size,
    encode_control,
)
from .paths import validate_manifest_paths

SIZE_LIMIT: Final = 2**53  # B.4: sizes are non-negative integers below 2^53
DEFAULT_MAX_FILES: Final = 1_000_000


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of DATA frames for a file of ``size`` bytes (0 for an empty file)."""
    if size < 0 or chunk_size < 1:
        raise ValueError(f"chunk_count({size}, {chunk_size}): size must be >= 0, chunk_size >= 1")
    return -(-size // chunk_size)


def chunk_length(size: int, chunk_size: int, chunk_index: int) -> int:
    """Payload length of chunk ``chunk_index``: ``chunk_size`` except for the last chunk."""
    count = chunk_count(size, chunk_size)
    if not 0 <= chunk_index < count:
        raise ValueError(f"chunk {chunk_index} out of range for a file of {count} chunks")
    return min(chunk_size, size - chunk_index * chunk_size)


def _empty_part_size(
    part: int, chunk_size: int, total_files: int | None, total_bytes: int | None
) -> int:
    # ``last`` is encoded as false ("false" is longer than "true"), so this
    # bounds the frame whichever value it ends up with.
    frame = Manifest(
        part=part,
        last=False,
        chunk_size=chunk_size,
        total_files=total_files,
        total_bytes=total_bytes,
        files=[],
    )
    return control_size(frame)


def build_manifest_parts(
    entries: Sequence[FileEntry], chunk_size: int, *, max_frame_size: int = MAX_CONTROL_FRAME
) -> list[Manifest]:
    """Page ``entries`` into Manifest frames each at most ``max_frame_size`` bytes.

    ``max_frame_size`` is capped at 65536 (B.3); pass a smaller negotiated
    maximum message size when the peer advertised one.  Entries must carry ids
    0..n-1 in order.  Each frame's size is computed exactly from the encoded
    size of an empty frame plus, per entry, its encoded size and a comma, so
    the list is encoded about twice in total; the result is then checked.
    """
    budget = min(max_frame_size, MAX_CONTROL_FRAME)
    for index, entry in enumerate(entries):
        if entry.id != index:
            raise LocalProtocolError(f"manifest entry {index} has id {entry.id}")
    total_files = len(entries)
    total_bytes = sum(entry.size for entry in entries)

    groups: list[list[FileEntry]] = []
    current: list[FileEntry] = []
    size = _empty_part_size(0, chunk_size, total_files, total_bytes)
    for entry in entries:
        entry_size = control_size(entry) + (1 if current else 0)  # comma separator
        if current and size + entry_size > budget:
            groups.append(current)
            current = []
            size = _empty_part_size(len(groups), chunk_size, None, None)
            entry_size -= 1
        if size + entry_size > budget:
            raise LocalProtocolError(
                f"manifest entry {entry.id} cannot fit in a {budget}-byte frame"
            )
        current.append(entry)
        size += entry_size
    groups.append(current)

    parts: list[Manifest] = []
    for number, files in enumerate(groups):
        first = number == 0
        part = Manifest(
            part=number,
            last=number == len(groups) - 1,
            chunk_size=chunk_size,
            total_files=total_files if first else None,
            total_bytes=total_bytes if first else None,
            files=files,
        )
        encoded = len(encode_control(part).encode("utf-8"))
        if encoded > budget:
            raise LocalProtocolError(
                f"manifest part {number} encodes to {encoded} bytes > {budget}"
            )
        parts.append(part)
    return parts


class ManifestAssembler:
    """Collects manifest parts and returns the validated file list at the end.

    Error codes: a part that breaks the manifest's own consistency (part
    numbers out of sequence, a part after the last, ``chunk_size`` changing
    between parts, ids not exactly 0..n-1 in order, totals that do not match
    the entries, more than ``max_files`` files, a size of 2^53 or more) is
    ``bad_manifest``; a bad path is ``bad_path``, checked on the complete list.
    A ``chunk_size`` above ``max_chunk_size`` (the negotiated maximum message
    size minus the 24-byte DATA header) is ``protocol`` rather than
    ``bad_manifest``: it is not a fault in the file list but a sender that
    would have to send DATA frames larger than the channel allows (B.1).

    After an error the assembler is spent; feeding it again is a
    :class:`LocalProtocolError`.
    """

    def __init__(
        self,
        max_chunk_size: int = DEFAULT_MAX_MESSAGE_SIZE - DATA_HEADER_LEN,
        *,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        self._max_chunk_size = max_chunk_size
        self._max_files = max_files
        self._next_part = 0
        self._chunk_size: int | None = None
        self._total_files = 0
        self._total_bytes = 0
        self._bytes_seen = 0
        self._entries = FileTable()
        self._complete = False
        self._failed = False

    @property
    def complete(self) -> bool:
        """True once the last part has been accepted."""
        return self._complete

    @property
    def chunk_size(self) -> int | None:
        """The manifest's chunk size, known from part 0 on."""
        return self._chunk_size

    @property
    def total_bytes(self) -> int:
        """Announced total size of all files (0 before part 0)."""
        return self._total_bytes

    def add(self, part: Manifest) -> FileTable | None:
        """Take the next part; return the whole file list after the last one."""
        if self._failed:
            raise LocalProtocolError("manifest assembler fed after it failed")
        try:
            return self._add(part)
        except RemoteProtocolError:
            self._failed = True
            raise

    def _add(self, part: Manifest) -> FileTable | None:
        if self._complete:
            raise RemoteProtocolError(
                "bad_manifest", f"manifest part {part.part} after the last part"
            )
        if part.part != self._next_part:
            raise RemoteProtocolError(
                "bad_manifest",
                f"manifest part {part.part} where part {self._next_part} was expected",
            )
        if part.part == 0:
            self._start(part)
        else:
            if part.chunk_size != self._chunk_size:
                raise RemoteProtocolError(
                    "bad_manifest",
                    f"manifest part {part.part} has chunk_size {part.chunk_size}, part 0 had {self._chunk_size}",
                )
            if part.total_files not in (None, self._total_files) or part.total_bytes not in (
                None,
                self._total_bytes,
            ):
                raise RemoteProtocolError(
                    "bad_manifest", f"manifest part {part.part} changes the totals"
                )
        self._next_part += 1
        self._take_files(part)
        if not part.last:
            return None
        return self._finish()

    def _start(self, part: Manifest) -> None:
        if part.total_files is None or part.total_bytes is None:
            raise RemoteProtocolError(
                "protocol", "manifest part 0 lacks total_files or total_bytes"
            )
        if not 1 <= part.chunk_size <= self._max_chunk_size:
            raise RemoteProtocolError(
                "protocol",
                f"chunk_size {part.chunk_size} is outside 1..{self._max_chunk_size} "
                "(maximum message size minus the DATA header)",
            )
        if part.total_files > self._max_files:
            raise RemoteProtocolError(
                "bad_manifest",
                f"manifest lists {part.total_files} files, at most {self._max_files} allowed",
            )
        if not 0 <= part.total_bytes < SIZE_LIMIT:
            raise RemoteProtocolError(
                "bad_manifest", f"total_bytes {part.total_bytes} is out of range"
            )
        self._chunk_size = part.chunk_size
        self._total_files = part.total_files
        self._total_bytes = part.total_bytes

    def _take_files(self, part: Manifest) -> None:
        # Checked as they arrive so memory stays bounded by total_files.
        if len(self._entries) + len(part.files) > self._total_files:
            raise RemoteProtocolError(
                "bad_manifest", f"manifest holds more than the announced {self._total_files} files"
            )
        for entry in part.files:
            expected = len(self._entries)
            if entry.id != expected:
                raise RemoteProtocolError(
                    "bad_manifest", f"file id {entry.id} where {expected} was expected"
                )
            if not 0 <= entry.size < SIZE_LIMIT:
                raise RemoteProtocolError(
                    "bad_manifest", f"file {entry.id} size {entry.size} is out of range"
                )
            self._bytes_seen += entry.size
            self._entries.append(entry)

    def _finish(self) -> FileTable:
        if len(self._entries) != self._total_files:
            raise RemoteProtocolError(
                "bad_manifest",
                f"manifest holds {len(self._entries)} files, total_files says {self._total_files}",
            )
        if self._bytes_seen != self._total_bytes:
            raise RemoteProtocolError(
                "bad_manifest",
                f"manifest sizes sum to {self._bytes_seen}, total_bytes says {self._total_bytes}",
            )
        validate_manifest_paths(self._entries.paths)
        self._complete = True
        return self._entries
