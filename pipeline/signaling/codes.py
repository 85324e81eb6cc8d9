"""Room codes (Appendix C.3): ``<number>-<word>-<word>-<word>``.

The sender draws a code from :mod:`secrets`; the receiver types it in.  A code
carries ``CODE_ENTROPY_BITS`` (about 37.6) bits, above the 32 the appendix asks
for, and the server's limit of 20 failed joins per client address per minute
keeps online guessing hopeless.  Codes compare case-insensitively after
trimming, so every comparison goes through :func:`normalize_code`.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Final

from .words import WORDS

NUMBER_BOUND: Final = 1000  # the number part is drawn from range(NUMBER_BOUND)
WORDS_PER_CODE: Final = 3
CODE_ENTROPY_BITS: Final[float] = math.log2(NUMBER_BOUND) + WORDS_PER_CODE * math.log2(len(WORDS))

# Shape only: the words of a code need not come from this version's WORDS.
_CODE_SHAPE: Final = re.compile(r"[0-9]{1,3}(?:-[a-z]+){2,}")


def new_code() -> str:
    """Draw a fresh room code, e.g. ``"7-orbit-lantern-velvet"``."""
    words = (secrets.choice(WORDS) for _ in range(WORDS_PER_CODE))
    return "-".join((str(secrets.randbelow(NUMBER_BOUND)), *words))


def normalize_code(code: str) -> str:
    """The canonical form codes are compared in: trimmed and lowercase."""
    return code.strip().lower()


def is_valid_code(code: str) -> bool:
    """Whether ``code`` (after normalization) has the number-word-word... shape."""
    return _CODE_SHAPE.fullmatch(normalize_code(code)) is not None
