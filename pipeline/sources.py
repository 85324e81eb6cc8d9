"""Turning the sender's command-line paths into manifest entries.

A file argument is sent under its own name; a directory argument is sent as a
tree under its own name (like ``scp -r``).  Symbolic links and special files
are skipped and reported (following links could loop or leave the tree); every
relative path is NFC and passes the same B.4 rules the receiver applies, so a
bad name fails here, before anything is offered.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass, field

from pipeline.protocol.errors import RemoteProtocolError
from pipeline.protocol.filetable import FileTable
from pipeline.protocol.frames import FileEntry
from pipeline.protocol.paths import validate_manifest_paths
from workers.messages import ReaderFile


class SourceError(Exception):
    """A path given on the command line cannot be sent (exit code 2)."""


@dataclass
class Sources:
    entries: FileTable = field(default_factory=FileTable)
    # (id, absolute path, size, manifest path): what the reader reads, and names it by
    files: list[ReaderFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # (path, reason): regular files found in a directory that could not be opened
    # for reading (permission denied, vanished while walking); left out of the offer.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.entries.total_bytes


# (relative path, absolute path, size, mtime_ns, mode): only what the offer needs.
# An os.stat_result per file held until the sort cost ~0.9 KiB of the sending
# supervisor's memory per file, which its allocator kept after they were freed.
_Found = tuple[str, str, int, int, int]


def _found(rel: str, absolute: str, st: os.stat_result) -> _Found:
    return (rel, absolute, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


def collect_sources(paths: list[str]) -> Sources:
    found: list[_Found] = []
    skipped: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for arg in paths:
        absolute = os.path.abspath(arg)
        try:
            st = os.lstat(absolute)
        except OSError as exc:
            raise SourceError(f"{arg}: {exc.strerror}") from None
        base = os.path.basename(absolute.rstrip(os.sep)) or absolute
        if stat.S_ISREG(st.st_mode):
            found.append(_found(base, absolute, st))
        elif stat.S_ISDIR(st.st_mode):
            _walk(absolute, base, found, skipped, unreadable)
        else:
            raise SourceError(f"{arg}: not a regular file or directory")
    # Last path first, so that popping gives them in order and each tuple is freed as
    # its entry is made (the walk's list and the entries are not both held whole).
    found.sort(key=lambda item: item[0], reverse=True)
    sources = Sources(skipped=skipped, unreadable=unreadable)
    file_id = 0
    while found:
        rel, absolute, size, mtime_ns, mode = found.pop()
        sources.entries.append(FileEntry(id=file_id, path=rel, size=size, mtime_ns=mtime_ns, mode=mode))
        sources.files.append((file_id, absolute, size, rel))
        file_id += 1
    try:
        validate_manifest_paths(sources.entries.paths)
    except RemoteProtocolError as exc:
        raise SourceError(f"cannot send these paths: {exc.message}") from None
    return sources


def _walk(
    root: str,
    prefix: str,
    found: list[_Found],
    skipped: list[str],
    unreadable: list[tuple[str, str]],
) -> None:
    def onerror(exc: OSError) -> None:
        # A directory beneath the argument that cannot be listed: its files are
        # unknown, the rest of the batch goes on.
        unreadable.append((str(exc.filename), exc.strerror or str(exc)))

    for directory, dirnames, filenames in os.walk(root, onerror=onerror):
        rel_dir = os.path.relpath(directory, root)
        for name in list(dirnames):
            if os.path.islink(os.path.join(directory, name)):
                skipped.append(os.path.join(directory, name))
                dirnames.remove(name)
        for name in filenames:
            absolute = os.path.join(directory, name)
            try:
                st = os.lstat(absolute)
            except OSError as exc:  # vanished since the directory was listed
                unreadable.append((absolute, exc.strerror or str(exc)))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(absolute)
                continue
            problem = _cannot_open(absolute)
            if problem:
                unreadable.append((absolute, problem))
                continue
            parts = [prefix] if rel_dir == "." else [prefix, *rel_dir.split(os.sep)]
            rel = "/".join([*parts, name])
            found.append(_found(unicodedata.normalize("NFC", rel), absolute, st))


def _cannot_open(path: str) -> str:
    """Why ``path`` cannot be opened for reading ("" if it can).

    Opening, not ``os.access``: the question is whether the reader will manage,
    and ``access`` answers for the real uid and knows nothing of ACL or LSM refusals.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    return ""
