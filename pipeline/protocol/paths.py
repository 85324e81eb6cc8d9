"""Manifest path rules of Appendix B.4.

A manifest path is a relative POSIX path in Unicode NFC whose components are
joined by ``/``.  The receiver refuses the whole manifest (code ``bad_path``,
nothing written) when any path breaks a rule, so these checks run on the
complete file list before the trust gate opens.

Rules, each raising :class:`RemoteProtocolError` ``bad_path``:

* the path is empty, longer than 4096 UTF-8 bytes, not valid Unicode (lone
  surrogates), or not in NFC (``unicodedata.is_normalized``) - B.4 says paths
  *are* NFC, and accepting other forms would let ``café`` and ``cafe`` + U+0301
  name two entries that most filesystems treat as one;
* it starts with ``/`` or a drive letter (ASCII letter and ``:`` at the start of
  the first component, e.g. ``C:`` or ``c:x``);
* a component is empty (``a//b``, trailing ``/``), ``.`` or ``..``, longer than
  255 UTF-8 bytes, or contains NUL, ``\\`` or a control character (Unicode
  category ``Cc``: U+0000-U+001F, U+007F-U+009F; format characters such as
  U+200B are allowed);
* across the list: a path appears twice, or a path is both a file and a
  directory prefix of another path (``dir`` and ``dir/file``).

The cross-path checks cost time proportional to the total length of the paths
whatever their depth or number, and little memory per path: each path and each
directory prefix is kept as a 64-bit hash, chained component by component
(``hash((parent's hash, component))``), in two open-addressing tables of
``array('q')``, about 16-40 bytes per path (a trie of components cost ~250 at
the receiver's peak, issue 13).  A path whose hash is already in a table is a
conflict or a hash collision; either way the whole list is then checked again
exactly, with a trie, which names the first offending path in list order as
before and lets a mere collision pass.  str hashes are keyed per process, so a
peer cannot aim collisions at the fast pass; if it could, it would only force
the exact pass.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Sequence
from typing import Final

from .errors import RemoteProtocolError

MAX_PATH_BYTES: Final = 4096
MAX_COMPONENT_BYTES: Final = 255

# General_Category Cc is closed under the Unicode stability policy (no code
# point will ever be added to it), so a fixed class equals ``category == "Cc"``;
# tests/unit/test_paths.py checks that against unicodedata for every code point.
_FORBIDDEN_CHAR: Final = re.compile("[\x00-\x1f\x7f-\x9f\\\\]")
_DRIVE_LETTER: Final = re.compile("[A-Za-z]:")
_SHOWN_CHARS: Final = 60


def _show(path: str) -> str:
    """``repr`` of a path, cut short so an error message stays readable."""
    if len(path) <= _SHOWN_CHARS:
        return repr(path)
    return f"{path[:_SHOWN_CHARS]!r}... ({len(path)} chars)"


def _bad(path: str, rule: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_path", f"path {_show(path)} {rule}")


def validate_path(path: str) -> None:
    """Check one manifest path against the per-path rules of B.4.

    Paths must be Unicode NFC (B.4: "a relative POSIX path in Unicode NFC");
    a path in any other normalization form is refused rather than normalized.
    """
    if not path:
        raise _bad(path, "is empty")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(path, "is not valid Unicode (lone surrogate)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _bad(path, f"is {len(encoded)} UTF-8 bytes, more than {MAX_PATH_BYTES}")
    if path.startswith("/"):
        raise _bad(path, "is absolute (starts with '/')")
    if _DRIVE_LETTER.match(path):
        raise _bad(path, "starts with a drive letter")
    forbidden = _FORBIDDEN_CHAR.search(path)
    if forbidden is not None:
        raise _bad(path, f"contains {forbidden.group()!r} (NUL, backslash or control character)")
    if not unicodedata.is_normalized("NFC", path):
        raise _bad(path, "is not in Unicode NFC")
    # UTF-8 never uses 0x2F inside a multi-byte sequence, so splitting the
    # encoded path gives each component with its length in bytes.
    for component in encoded.split(b"/"):
        if not component:
            raise _bad(path, "has an empty component")
        if component in (b".", b".."):
            raise _bad(path, f"has a {component.decode()!r} component")
        if len(component) > MAX_COMPONENT_BYTES:
            raise _bad(
                path,
                f"has a component of {len(component)} UTF-8 bytes, more than {MAX_COMPONENT_BYTES}",
            )


def validate_manifest_paths(paths: Sequence[str]) -> None:
    """Check a complete manifest's paths: each one, then duplicates and prefixes.

    Raises :class:`RemoteProtocolError` ``bad_path`` naming the first offending
    path in list order.
    """
    files = _HashSet()
    directories = _HashSet()
    previous: list[str] = []
    chain: list[int] = []  # chain[d]: hash of the previous path's first d + 1 components
    for path in paths:
        validate_path(path)
        components = path.split("/")
        # Directory prefixes shared with the previous path are in the table already
        # (and were checked against the files then; a file added since checked
        # itself against them).
        same = 0
        last = len(components) - 1
        limit = min(last, len(previous) - 1)
        while same < limit and components[same] == previous[same]:
            same += 1
        del chain[same:]
        parent = chain[-1] if chain else 0
        for depth in range(same, last):
            parent = hash((parent, components[depth]))
            chain.append(parent)
            if parent in files:
                return _validate_exactly(paths)
            directories.add(parent)
        node = hash((parent, components[last]))
        if node in directories or not files.add(node):
            return _validate_exactly(paths)
        previous = components


class _HashSet:
    """A set of 64-bit ints in one ``array('q')`` (open addressing, linear
    probing, at most half full): 8-16 bytes per member where a ``set`` of ints
    costs ~70."""

    __slots__ = ("_count", "_mask", "_slots")

    def __init__(self) -> None:
        self._slots = array("q", [0]) * 1024
        self._mask = 1023
        self._count = 0

    def __contains__(self, value: int) -> bool:
        value = value or 1  # 0 marks an empty slot
        slots, mask = self._slots, self._mask
        slot = value & mask
        while True:
            held = slots[slot]
            if held == value:
                return True
            if held == 0:
                return False
            slot = (slot + 1) & mask

    def add(self, value: int) -> bool:
        """Add ``value``; False if it was already there."""
        value = value or 1
        slots, mask = self._slots, self._mask
        slot = value & mask
        while True:
            held = slots[slot]
            if held == value:
                return False
            if held == 0:
                break
            slot = (slot + 1) & mask
        slots[slot] = value
        self._count += 1
        if 2 * self._count > mask:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("q", [0]) * (2 * len(old))  # no temporary bytes of that size
        self._mask = 2 * len(old) - 1
        self._count = 0
        for value in old:
            if value:
                self.add(value)


def _validate_exactly(paths: Sequence[str]) -> None:
    """The cross-path checks on the strings themselves (after a hash hit)."""
    # Trie of components: node 0 is the root; children maps (parent, name) to a
    # node id.  A node may be a file or a directory, never both, and a file
    # node is claimed by one path only.
    children: dict[tuple[int, str], int] = {}
    files: set[int] = set()
    directories: set[int] = set()
    for path in paths:
        validate_path(path)
        components = path.split("/")
        node = 0
        for depth, component in enumerate(components):
            key = (node, component)
            child = children.get(key)
            if child is None:
                child = len(children) + 1
                children[key] = child
            node = child
            if depth == len(components) - 1:
                break
            if node in files:
                prefix = "/".join(components[: depth + 1])
                raise _bad(path, f"lies under {_show(prefix)}, which is also a file")
            directories.add(node)
        if node in files:
            raise _bad(path, "appears twice")
        if node in directories:
            raise _bad(path, "is a file and also a directory prefix of another path")
        files.add(node)
