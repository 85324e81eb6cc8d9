"""Each file's B.6 verdict by file id: one byte per file, not a dict entry.

A dict of 100,000 verdicts costs ~80 B per file (its table and an int object per
id above 256) in both connection processes for the whole session; this mapping
costs one byte per file and keeps the count of each verdict, so "how many
verified" is not a walk over every file.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Final

from .frames import Verdict

_CODES: Final[dict[str, int]] = {"verified": 1, "mismatch": 2, "io_error": 3}
_VERDICTS: Final[tuple[Verdict, ...]] = ("verified", "mismatch", "io_error")
MAX_FILE_ID: Final = (1 << 32) - 1  # B.2's file_id is a u32


class Verdicts(MutableMapping[int, Verdict]):
    __slots__ = ("_codes", "_counts", "_len")

    def __init__(self) -> None:
        self._codes = bytearray()  # 0: no verdict yet; else _CODES
        self._counts = [0, 0, 0, 0]
        self._len = 0

    def __getitem__(self, file_id: int) -> Verdict:
        code = self._codes[file_id] if 0 <= file_id < len(self._codes) else 0
        if not code:
            raise KeyError(file_id)
        return _VERDICTS[code - 1]

    def __setitem__(self, file_id: int, verdict: Verdict) -> None:
        code = _CODES[verdict]
        if not 0 <= file_id <= MAX_FILE_ID:
            raise KeyError(file_id)
        if file_id >= len(self._codes):
            self._codes.extend(bytes(file_id + 1 - len(self._codes)))
        old = self._codes[file_id]
        if old:
            self._counts[old] -= 1
        else:
            self._len += 1
        self._codes[file_id] = code
        self._counts[code] += 1

    def __delitem__(self, file_id: int) -> None:
        old = self._codes[file_id] if 0 <= file_id < len(self._codes) else 0
        if not old:
            raise KeyError(file_id)
        self._codes[file_id] = 0
        self._counts[old] -= 1
        self._len -= 1

    def __contains__(self, file_id: object) -> bool:
        return isinstance(file_id, int) and 0 <= file_id < len(self._codes) and self._codes[file_id] != 0

    def __iter__(self) -> Iterator[int]:
        return (file_id for file_id, code in enumerate(self._codes) if code)

    def __len__(self) -> int:
        return self._len

    def count(self, verdict: Verdict) -> int:
        """How many files have this verdict."""
        return self._counts[_CODES[verdict]]

    def __repr__(self) -> str:
        return f"Verdicts({dict(self.items())!r})"
