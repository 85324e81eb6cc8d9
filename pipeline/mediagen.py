"""Deterministic sample media trees for demos, tests and benchmarks.

``generate_media_tree`` builds what a phone or camera dump looks like: nested
folders, many small files, some empty ones, a few large videos, and (by default)
Unicode names in NFC, including characters whose NFC and NFD forms differ
("Música", "Álbum", "Été") and names with spaces and dashes. Every name is portable
(no ``<>:"\\|?*``, no trailing dot or space) and unique even case-insensitively,
so the same tree can be received on macOS or Windows.

Content is pseudo-random and fixed by ``seed``: the same arguments give the same
bytes. Large files are made of 1 MiB blocks, each a rotation of a per-file random
pool with every 4 KiB page stamped with the file's salt and the page's offset. So
no two pages of any file are equal (a chunk written at the wrong offset changes the
digest), and generation runs at memory speed (GB/s), so the disk is the limit.

``tree_digest`` reads a tree back as ``{relative path: (size, sha256 hex)}``.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import struct
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

__all__ = ["generate_media_tree", "tree_digest"]

KiB: Final = 1024
MiB: Final = 1024 * KiB
BLOCK: Final = MiB
PAGE: Final = 4 * KiB
_STAMP: Final = struct.Struct("<QQ")  # (file salt, byte offset) at the start of each page
_READ_BLOCK: Final = MiB

# (folder, file name pattern, extension); {n} is a per-folder counter.
_SMALL_KINDS_UNICODE: Final = (
    ("DCIM/100CANON", "IMG_{n:04d}", ".JPG"),
    ("DCIM/101CANON", "IMG_{n:04d}", ".CR2"),
    ("Música/Álbum 1", "{n:02d} – Intro", ".flac"),
    ("Música/Sigur Rós/Ágætis byrjun", "{n:02d} Svefn-g-englar", ".mp3"),
    ("Photos/2023/Été à Paris", "Café {n:03d}", ".heic"),
    ("Photos/日本/東京", "写真 {n:03d}", ".jpg"),
    ("Documents/Résumés", "Résumé {n}", ".pdf"),
    ("Documents/notes", "note {n}", ".txt"),
    ("Android/media/.thumbnails", "{n}", ".jpg"),
)
_SMALL_KINDS_ASCII: Final = (
    ("DCIM/100CANON", "IMG_{n:04d}", ".JPG"),
    ("DCIM/101CANON", "IMG_{n:04d}", ".CR2"),
    ("Music/Album 1", "{n:02d} - Intro", ".flac"),
    ("Music/Sigur Ros/Agaetis byrjun", "{n:02d} Svefn-g-englar", ".mp3"),
    ("Photos/2023/Paris", "Cafe {n:03d}", ".heic"),
    ("Photos/Tokyo", "photo {n:03d}", ".jpg"),
    ("Documents/Resumes", "Resume {n}", ".pdf"),
    ("Documents/notes", "note {n}", ".txt"),
    ("Android/media/.thumbnails", "{n}", ".jpg"),
)
# Empty files real devices are full of.
_EMPTY_NAMES: Final = ("Android/media/.nomedia", "DCIM/.nomedia", "Documents/notes/empty.txt")
_SMALL_EMPTY_SHARE: Final = 0.05


def generate_media_tree(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    small_files: int = 300,
    small_size_range: tuple[int, int] = (0, 64 * KiB),
    large_files: int = 1,
    large_size: int = 64 * MiB,
    unicode: bool = True,
) -> list[str]:
    """Write a media tree under ``root`` (created if missing; must be empty) and
    return the relative paths (``/``-separated, NFC) of every file, sorted.

    ``small_files`` files with sizes in ``small_size_range`` (inclusive; when the
    range includes 0, about 5 % are empty and at least one is), and ``large_files``
    files of exactly ``large_size`` bytes under ``Vidéos/2024/`` (``Videos/2024/``
    without ``unicode``).
    """
    low, high = small_size_range
    if not 0 <= low <= high:
        raise ValueError(f"small_size_range must be 0 <= low <= high, got {small_size_range}")
    if small_files < 0 or large_files < 0 or large_size < 0:
        raise ValueError("file counts and large_size must be >= 0")
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        raise FileExistsError(
            f"{base}: not empty; generate_media_tree writes only into an empty directory"
        )

    rng = random.Random(seed)
    names = _NameSet()
    written: list[str] = []

    for index in range(small_files):
        if low == 0 and index < len(_EMPTY_NAMES) and index * 20 < small_files:
            rel, size = _EMPTY_NAMES[index], 0
        else:
            rel = names.small(rng, unicode)
            empty = low == 0 and rng.random() < _SMALL_EMPTY_SHARE
            size = 0 if empty else _small_size(rng, low, high)
        names.claim(rel)
        file_rng = random.Random(f"{seed}:{rel}")
        _write(base, rel, [file_rng.randbytes(size)])
        written.append(rel)

    videos = "Vidéos/2024" if unicode else "Videos/2024"
    for index in range(large_files):
        rel = f"{videos}/clip_{index + 1:03d}.mp4"
        names.claim(rel)
        _write(base, rel, _large_blocks(f"{seed}:{rel}", large_size))
        written.append(rel)

    return sorted(written)


def tree_digest(root: str | os.PathLike[str]) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256 hex)}`` of every regular file under ``root``.

    Nothing is skipped, hidden files included, and nothing is followed: a symlink
    is listed as ``(-1, "symlink -> <target>")`` and any other non-regular file as
    ``(-1, "<fifo>")``-style text, so a tree that gained one compares unequal. Paths use ``/`` and are
    exactly the bytes on disk (decoded as str), not normalised: comparing two trees
    also compares Unicode normalisation.
    """
    base = Path(root)
    result: dict[str, tuple[int, str]] = {}
    for path in _walk(base):
        rel = path.relative_to(base).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            result[rel] = (-1, f"symlink -> {os.readlink(path)}")
        elif not stat.S_ISREG(mode):
            result[rel] = (-1, f"<{_special_kind(mode)}>")
        else:
            digest = hashlib.sha256()
            size = 0
            with open(path, "rb") as f:
                while block := f.read(_READ_BLOCK):
                    digest.update(block)
                    size += len(block)
            result[rel] = (size, digest.hexdigest())
    return result


# ---------------------------------------------------------------------------


class _NameSet:
    """Unique names, also when compared case-insensitively (macOS, Windows)."""

    def __init__(self) -> None:
        self._folded: set[str] = set()
        self._counters: dict[str, int] = {}

    def claim(self, rel: str) -> None:
        folded = rel.casefold()
        if folded in self._folded:
            raise AssertionError(f"generated a duplicate name {rel!r}")
        self._folded.add(folded)

    def small(self, rng: random.Random, unicode: bool) -> str:
        kinds = _SMALL_KINDS_UNICODE if unicode else _SMALL_KINDS_ASCII
        while True:
            folder, pattern, ext = kinds[rng.randrange(len(kinds))]
            n = self._counters.get(folder, 0) + 1
            self._counters[folder] = n
            rel = unicodedata.normalize("NFC", f"{folder}/{pattern.format(n=n)}{ext}")
            if rel.casefold() not in self._folded:
                return rel


def _small_size(rng: random.Random, low: int, high: int) -> int:
    # Skewed towards small sizes, as thumbnails and notes outnumber photos.
    return low + int((high - low) * rng.random() ** 2 + 0.5)


def _large_blocks(salt_text: str, size: int) -> Iterator[bytes | bytearray]:
    rng = random.Random(salt_text)
    salt = rng.getrandbits(64)
    pool = rng.randbytes(BLOCK)
    doubled = pool + pool
    offset = 0
    while offset < size:
        length = min(BLOCK, size - offset)
        start = rng.randrange(BLOCK)
        block = bytearray(doubled[start : start + length])
        for page in range(0, length - _STAMP.size + 1, PAGE):
            _STAMP.pack_into(block, page, salt, offset + page)
        yield block
        offset += length


def _special_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "char device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _write(base: Path, rel: str, blocks: Iterable[bytes | bytearray]) -> None:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        for block in blocks:
            f.write(block)


def _walk(base: Path) -> Iterator[Path]:
    stack = [base]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    yield path
