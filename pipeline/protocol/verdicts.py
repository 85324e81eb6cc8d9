"""Each file's B.6 verdict by file id: one byte per file, not a dict entry.

A dict of 100,000 verdicts costs ~80 B per file (its table and an int object per
id above 256) in both connection processes for the whole session; this mapping
costs one byte per file and keeps the count of each verdict, so "how many
verified" is not a walk over every file.  The byte is a letter, so the whole map
is also the verdict string the connection process hands to the summary
(:meth:`Verdicts.letters`, read back with :func:`verdict_in`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Final

from .frames import Verdict

_LETTERS: Final[dict[str, int]] = {"verified": ord("v"), "mismatch": ord("m"), "io_error": ord("e")}
_VERDICTS: Final[dict[int, Verdict]] = {ord("v"): "verified", ord("m"): "mismatch", ord("e"): "io_error"}
NO_VERDICT: Final = ord("-")
MAX_FILE_ID: Final = (1 << 32) - 1  # B.2's file_id is a u32


class Verdicts(MutableMapping[int, Verdict]):
    __slots__ = ("_counts", "_letters")

    def __init__(self) -> None:
        self._letters = bytearray()  # NO_VERDICT or a letter of _LETTERS, by file id
        self._counts = dict.fromkeys(_VERDICTS, 0)

    def _letter(self, file_id: int) -> int:
        return self._letters[file_id] if 0 <= file_id < len(self._letters) else NO_VERDICT

    def __getitem__(self, file_id: int) -> Verdict:
        letter = self._letter(file_id)
        if letter == NO_VERDICT:
            raise KeyError(file_id)
        return _VERDICTS[letter]

    def __setitem__(self, file_id: int, verdict: Verdict) -> None:
        letter = _LETTERS[verdict]
        if not 0 <= file_id <= MAX_FILE_ID:
            raise KeyError(file_id)
        if file_id >= len(self._letters):
            self._letters.extend(bytes([NO_VERDICT]) * (file_id + 1 - len(self._letters)))
        old = self._letters[file_id]
        if old != NO_VERDICT:
            self._counts[old] -= 1
        self._letters[file_id] = letter
        self._counts[letter] += 1

    def __delitem__(self, file_id: int) -> None:
        old = self._letter(file_id)
        if old == NO_VERDICT:
            raise KeyError(file_id)
        self._letters[file_id] = NO_VERDICT
        self._counts[old] -= 1

    def __contains__(self, file_id: object) -> bool:
        return isinstance(file_id, int) and self._letter(file_id) != NO_VERDICT

    def __iter__(self) -> Iterator[int]:
        return (file_id for file_id, letter in enumerate(self._letters) if letter != NO_VERDICT)

    def __len__(self) -> int:
        return sum(self._counts.values())

    def count(self, verdict: Verdict) -> int:
        """How many files have this verdict."""
        return self._counts[_LETTERS[verdict]]

    def letters(self, files: int) -> str:
        """The verdicts of files ``0 .. files - 1`` as one letter each (``-``: none)."""
        held = self._letters[:files]
        return (held + bytes([NO_VERDICT]) * (files - len(held))).decode()

    def __repr__(self) -> str:
        return f"Verdicts({dict(self.items())!r})"


def verdict_in(letters: str, file_id: int) -> Verdict | None:
    """The verdict :meth:`Verdicts.letters` wrote for ``file_id``, or None."""
    return _VERDICTS.get(ord(letters[file_id])) if 0 <= file_id < len(letters) else None
